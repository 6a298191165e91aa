"""Round trips: ``decode(encode(x)) == x`` for every wire type, raw and gzipped."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol
from protocol import (
    EVENT_TYPES,
    Event,
    Report,
    UnknownEvent,
    decode_event,
    decode_report,
    decompress,
    encode_event,
    encode_report,
    encode_report_raw,
    event_to_json,
    format_datetime,
    gzip_body,
    parse_datetime,
)
from tests.protocol.strategies import (
    BIG,
    FAST,
    PER_TYPE,
    aware_datetimes,
    example,
    example_report,
    instances,
    reports,
    unknown_events,
)


def _datetimes_are_utc(event: Event) -> None:
    for name in ("ts", "boot_time", "started_at", "ended_at"):
        value = getattr(event, name, None)
        if value is not None:
            assert value.tzinfo is UTC, (name, value)


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
@PER_TYPE
def test_event_round_trips(cls: type[Event], data: st.DataObject) -> None:
    event = data.draw(instances(cls))
    _datetimes_are_utc(event)
    wire = encode_event(event)
    decoded = decode_event(json.loads(wire))
    assert decoded == event
    assert type(decoded) is cls
    assert encode_event(decoded) == wire  # encoding is deterministic
    first = json.loads(wire)
    assert list(first)[:3] == ["seq", "ts", "kind"]
    assert first["kind"] == cls.KIND


@given(event=unknown_events, minor=st.integers(min_value=protocol.MINOR + 1, max_value=99))
@FAST
def test_unknown_event_round_trips_under_a_newer_minor(event: UnknownEvent, minor: int) -> None:
    body = json.loads(encode_event(event))
    assert body["kind"] == event.unknown_kind
    assert {k: v for k, v in body.items() if k not in ("seq", "ts", "kind")} == dict(event.data)
    assert decode_event(body, minor=minor) == event


@given(report=reports())
@BIG
def test_report_round_trips(report: Report) -> None:
    wire = encode_report(report)
    assert decode_report(wire) == report
    assert decode_report(decompress(gzip_body(wire), "gzip")) == report
    assert decode_report(decompress(wire, None)) == report
    assert decode_report(decompress(wire, "identity")) == report


@given(report=reports(unknown=True))
@BIG
def test_report_with_unknown_kinds_round_trips(report: Report) -> None:
    assert decode_report(encode_report(report)) == report


@given(report=reports())
@BIG
def test_raw_encoding_of_spooled_events_equals_encode_report(report: Report) -> None:
    raw = encode_report_raw(
        report.agent,
        report.sent_at,
        [encode_event(e) for e in report.events],
        backlog=report.backlog,
    )
    assert raw == encode_report(report)
    assert decode_report(raw) == report


@given(body=st.binary(max_size=4096))
@FAST
def test_gzip_round_trips_any_bytes(body: bytes) -> None:
    assert decompress(gzip_body(body), "gzip") == body
    assert decompress(gzip_body(body), " GZip ") == body  # header values are case-insensitive


@given(when=aware_datetimes)
@FAST
def test_datetimes_normalise_to_utc_and_round_trip(when: datetime) -> None:
    text = format_datetime(when)
    assert text.endswith("Z")
    assert len(text) == len("2024-01-01T00:00:00.000000Z")  # four-digit year, microseconds
    parsed = parse_datetime(text, "ts")
    assert parsed == when
    assert parsed.tzinfo is UTC
    assert parse_datetime(when, "ts") == when
    assert parse_datetime(when.isoformat(), "ts") == when


def test_non_utc_offset_is_normalised_when_built() -> None:
    plus_two = timezone(timedelta(hours=2))
    event = protocol.AgentEvent(seq=1, ts=datetime(2024, 1, 1, 2, 30, tzinfo=plus_two), event="x")
    assert event.ts == datetime(2024, 1, 1, 0, 30, tzinfo=UTC)
    assert event.ts.tzinfo is UTC
    assert json.loads(encode_event(event))["ts"] == "2024-01-01T00:30:00.000000Z"
    from_string = protocol.AgentEvent(seq=1, ts="2024-01-01T02:30:00+02:00", event="x")  # type: ignore[arg-type]
    assert from_string == event


def test_unicode_survives_the_wire() -> None:
    event = protocol.DeviceStatus(
        seq=1,
        ts=datetime(2024, 1, 1, tzinfo=UTC),
        device="caisse n°3 — 收银台 🧾",
        device_kind="pinpad",
        state="ok",
        flags=("ß", "\u0000", "\U0010ffff"),
        attributes={"名前": "値", "emoji": "🙂"},
    )
    wire = encode_event(event)
    assert "收银台".encode() in wire  # UTF-8 on the wire, not \u escapes
    assert decode_event(json.loads(wire)) == event


def test_event_to_json_leaves_out_none_and_keeps_defaults() -> None:
    event = protocol.ProbeChange(
        seq=9, ts=datetime(2024, 1, 1, tzinfo=UTC), probe="dns", target="t", role="dns", state="ok"
    )
    body = event_to_json(event)
    assert body == {
        "seq": 9,
        "ts": "2024-01-01T00:00:00.000000Z",
        "kind": "probe_change",
        "probe": "dns",
        "target": "t",
        "role": "dns",
        "state": "ok",
    }


def test_example_report_round_trips() -> None:
    report = example_report()
    assert decode_report(encode_report(report)) == report
    unknown = Report(
        v="1.3", agent=report.agent, sent_at=report.sent_at, events=(example(UnknownEvent),)
    )
    wire = encode_report(unknown)
    assert json.loads(wire)["v"] == "1.3"
    assert decode_report(wire) == unknown
