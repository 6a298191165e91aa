"""The compiled per-type codecs agree with the reference field walkers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import EVENT_TYPES, AgentInfo, ProtocolError
from protocol.compiled import decoder, encoder
from protocol.fields import from_json, to_json
from tests.protocol.strategies import FAST, garbage_json, instances

TYPES = [*EVENT_TYPES, AgentInfo]


def judge(fn: Any, data: Any) -> Any:
    try:
        return fn(data)
    except ProtocolError as err:
        return ("refused", err.status, err.message, err.field)


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
@FAST
def test_decode_agrees_on_valid_and_spliced_input(cls: type, data: st.DataObject) -> None:
    obj = data.draw(instances(cls), label="instance")
    tree = json.loads(json.dumps(to_json(obj)))
    assert decoder(cls)(tree, "x") == from_json(cls, tree, "x") == obj
    key = data.draw(st.sampled_from(sorted(tree) or ["absent"]), label="key")
    if data.draw(st.booleans(), label="delete"):
        tree.pop(key, None)
    else:
        tree[key] = data.draw(garbage_json, label="value")
    assert judge(lambda d: decoder(cls)(d, "events[2]"), tree) == judge(
        lambda d: from_json(cls, d, "events[2]"), tree
    )


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
@FAST
def test_encode_agrees(cls: type, data: st.DataObject) -> None:
    obj = data.draw(instances(cls))
    expected = to_json(obj)
    got = encoder(cls, head={"seq": "", "ts": ""})(obj)
    if cls is AgentInfo:
        assert got == expected
    else:  # events: the same fields plus kind, with seq, ts and kind first
        assert got == {**expected, "kind": cls.KIND}  # type: ignore[attr-defined]
        assert list(got)[:3] == ["seq", "ts", "kind"]


def test_a_lone_surrogate_is_refused_by_both() -> None:
    """Found by the equivalence test above: ``"\\ud800"`` is valid JSON but not UTF-8."""
    from protocol.events import ProbeChange

    tree = {"seq": 1, "ts": "2000-01-01T00:00:00Z", "probe": "\ud800", "target": "",
            "role": "link", "state": "ok"}  # fmt: skip
    expected = ("refused", 400, "x.probe: string is not valid Unicode", "x.probe")
    assert judge(lambda d: decoder(ProbeChange)(d, "x"), tree) == expected
    assert judge(lambda d: from_json(ProbeChange, d, "x"), tree) == expected
