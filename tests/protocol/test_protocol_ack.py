"""The collector's acknowledgement: encode, decode, refuse."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import Ack, ProtocolError, decode_ack, encode_ack
from protocol.events import SEQ_MAX
from tests.protocol.strategies import FAST, check_error

acks = st.builds(
    Ack,
    acked=st.lists(st.integers(min_value=1, max_value=SEQ_MAX), max_size=50).map(tuple),
    stored=st.integers(min_value=0, max_value=10_000),
    duplicates=st.integers(min_value=0, max_value=10_000),
)


@given(ack=acks)
@FAST
def test_ack_round_trips(ack: Ack) -> None:
    wire = encode_ack(ack)
    assert decode_ack(wire) == ack
    assert json.loads(wire) == {
        "acked": list(ack.acked),
        "stored": ack.stored,
        "duplicates": ack.duplicates,
    }


def test_ack_counts_default_to_zero() -> None:
    assert decode_ack(b'{"acked": [3, 1, 2]}') == Ack(acked=(3, 1, 2))
    assert decode_ack(b'{"acked": [], "future": {"x": 1}}') == Ack(acked=())


def test_ack_is_immutable_and_keeps_a_tuple() -> None:
    ack = Ack(acked=[1, 2])  # type: ignore[arg-type]
    assert ack.acked == (1, 2)
    with pytest.raises(AttributeError):
        ack.stored = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", None),
        (b"[]", None),
        (b"null", None),
        (b'{"acked": [1]} x', None),
        (b"{}", "acked"),
        (b'{"acked": null}', "acked"),
        (b'{"acked": "1"}', "acked"),
        (b'{"acked": {"1": true}}', "acked"),
        (b'{"acked": [0]}', "acked"),
        (b'{"acked": [-1]}', "acked"),
        (b'{"acked": [true]}', "acked"),
        (b'{"acked": [1.0]}', "acked"),
        (b'{"acked": ["1"]}', "acked"),
        (b'{"acked": [NaN]}', None),
        (b'{"acked": [1], "stored": "2"}', "stored"),
        (b'{"acked": [1], "stored": true}', "stored"),
        (b'{"acked": [1], "stored": -1}', "stored"),
        (b'{"acked": [1], "duplicates": 0.5}', "duplicates"),
        (b'{"acked": [1], "duplicates": -3}', "duplicates"),
    ],
)
def test_ack_refusals(body: bytes, field: str | None) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_ack(body)
    check_error(info.value)
    assert info.value.status == 400
    assert info.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"acked": (0,)}, "acked"),
        ({"acked": ("1",)}, "acked"),
        ({"acked": None}, "acked"),
        ({"acked": (1,), "stored": -1}, "stored"),
        ({"acked": (1,), "duplicates": None}, "duplicates"),
    ],
)
def test_ack_validates_when_built(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        Ack(**kwargs)
    assert info.value.field == field
