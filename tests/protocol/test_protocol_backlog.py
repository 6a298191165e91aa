"""The report's optional ``backlog``: a compatible extension of protocol v1.

Every decoder (the reference codec, the compiled fast path, the constructor
and the JSON Schema) agrees on what it accepts and how it refuses; a report
without it (an older agent) is still a valid v1 report.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

import protocol
from protocol import ProtocolError, Report, decode_report, encode_report, encode_report_raw
from protocol.events import SEQ_MAX
from protocol.fastwire import _fast, decode_report_rows, wire_report
from protocol.schema import build_schema
from tests.protocol.strategies import example_report, example_report_json, to_body

VALIDATOR = Draft202012Validator(build_schema())


def with_backlog(value: Any) -> bytes:
    body = example_report_json()
    body["backlog"] = value
    return to_body(body)


@pytest.mark.parametrize("backlog", [0, 1, 12_345, SEQ_MAX])
def test_backlog_round_trips_through_every_decoder(backlog: int) -> None:
    built = Report(
        agent=example_report().agent,
        sent_at=example_report().sent_at,
        events=example_report().events,
        backlog=backlog,
    )
    raw = encode_report(built)
    assert json.loads(raw)["backlog"] == backlog
    assert decode_report(raw) == built
    assert decode_report(raw).backlog == backlog
    fast = _fast(raw, 10_000)  # the compiled path judges it (no fallback)
    assert fast.backlog == backlog
    reference = wire_report(built)
    assert (fast.agent, fast.backlog) == (reference.agent, reference.backlog)
    assert [e[:3] for e in fast.events] == [e[:3] for e in reference.events]
    assert decode_report_rows(protocol.decompress(protocol.gzip_body(raw), "gzip")) == fast
    assert VALIDATOR.is_valid(json.loads(raw))


def test_the_uplinks_raw_encoding_carries_backlog() -> None:
    report = example_report()
    bodies = [protocol.encode_event(e) for e in report.events]
    raw = encode_report_raw(report.agent, report.sent_at, bodies, backlog=7)
    assert decode_report(raw).backlog == 7
    assert decode_report_rows(raw).backlog == 7
    without = encode_report_raw(report.agent, report.sent_at, bodies)
    assert b"backlog" not in without


def test_a_report_without_backlog_is_accepted_as_not_said() -> None:
    body = example_report_json()
    assert "backlog" not in body  # what an older agent sends
    raw = to_body(body)
    assert decode_report(raw).backlog is None
    assert _fast(raw, 10_000).backlog is None
    assert decode_report_rows(raw).backlog is None
    assert VALIDATOR.is_valid(body)
    # an explicit null means the same, as for every optional field
    assert decode_report(with_backlog(None)).backlog is None
    assert decode_report_rows(with_backlog(None)).backlog is None


BAD = [
    (-1, "backlog: -1 is below the minimum 0"),
    ("3", "backlog: expected integer, got string"),
    (1.5, "backlog: expected integer, got number"),
    (2.0, "backlog: expected integer, got number"),
    (True, "backlog: expected integer, got boolean"),
    ([1], "backlog: expected integer, got array"),
    ({"n": 1}, "backlog: expected integer, got object"),
    (2**63, "backlog: outside the 64-bit integer range"),
]


@pytest.mark.parametrize(("value", "message"), BAD, ids=[repr(v)[:12] for v, _ in BAD])
def test_a_bad_backlog_is_a_400_naming_backlog_on_every_path(value: Any, message: str) -> None:
    raw = with_backlog(value)
    for decode in (decode_report, decode_report_rows):
        with pytest.raises(ProtocolError) as info:
            decode(raw)
        assert (info.value.status, info.value.field, info.value.message) == (
            400,
            "backlog",
            message,
        )
    if (
        value != 2.0
    ):  # JSON Schema counts 2.0 as an integer; the decoders (like every int field) do not
        assert not VALIDATOR.is_valid(json.loads(raw))
    with pytest.raises(ProtocolError) as built:
        Report(agent=example_report().agent, sent_at=example_report().sent_at, backlog=value)
    assert built.value.field == "backlog"
    with pytest.raises(ProtocolError):
        encode_report_raw(example_report().agent, example_report().sent_at, [], backlog=value)


def test_backlog_does_not_change_the_protocol_version() -> None:
    # An optional report field is ignored by any v1 reader, so it needs no new
    # minor version; a newer minor would also push every report of a new agent
    # off an older collector's fast path (protocol/fastwire.py).
    assert protocol.VERSION == "1.0"
    assert json.loads(encode_report(example_report()))["v"] == "1.0"
