"""Protocol versions, and tolerance of unknown optional fields."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol
from protocol import ProtocolError, UnknownEvent, decode_report, encode_report, parse_version
from tests.protocol.strategies import (
    FAST,
    check_error,
    example_report,
    example_report_json,
    to_body,
)

FUTURE_EVENT = {
    "seq": 99,
    "ts": "2024-05-06T07:08:09+02:00",
    "kind": "printer_jam",
    "tray": 2,
    "parts": ["roller", {"id": 7}],
    "note": None,
}


def _refused(data: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_report(to_body(data))
    check_error(info.value)
    return info.value


@pytest.mark.parametrize("v", ["1.0", "1.7", "1.10", "1.9999"])
def test_any_minor_of_major_1_is_accepted(v: str) -> None:
    body = example_report_json()
    body["v"] = v
    report = decode_report(to_body(body))
    assert report.v == v
    assert report.events == example_report().events


def test_newer_minor_keeps_an_unknown_kind_with_its_data() -> None:
    body = example_report_json()
    body["v"] = "1.7"
    body["events"].append(FUTURE_EVENT)
    report = decode_report(to_body(body))
    unknown = report.events[-1]
    assert isinstance(unknown, UnknownEvent)
    assert unknown.kind == "printer_jam"
    assert unknown.seq == 99
    assert unknown.ts == protocol.parse_datetime("2024-05-06T05:08:09Z", "ts")
    assert dict(unknown.data) == {"tray": 2, "parts": ["roller", {"id": 7}], "note": None}
    # the known events are decoded as usual
    assert report.events[:-1] == example_report().events
    # and its encoding keeps the data, so a relay loses nothing
    again = json.loads(protocol.encode_event(unknown))
    assert again == {**FUTURE_EVENT, "ts": "2024-05-06T05:08:09.000000Z"}
    assert decode_report(encode_report(report)) == report


def test_unknown_kind_is_still_checked_for_seq_and_ts() -> None:
    for bad, field in (
        ({"seq": 0}, "events[0].seq"),
        ({"seq": "1"}, "events[0].seq"),
        ({"ts": "yesterday"}, "events[0].ts"),
        ({"ts": None}, "events[0].ts"),
    ):
        body = example_report_json()
        body["v"] = "1.7"
        body["events"] = [{**FUTURE_EVENT, **bad}]
        assert _refused(body).field == field


def test_unknown_kind_in_the_version_we_speak_is_refused() -> None:
    body = example_report_json()
    assert body["v"] == "1.0"
    body["events"].insert(2, FUTURE_EVENT)
    err = _refused(body)
    assert err.status == 400
    assert err.field == "events[2].kind"
    assert "printer_jam" in err.message


@pytest.mark.parametrize("v", ["2.0", "0.9", "3.1", "0.0", "9999.0"])
def test_other_majors_are_refused_naming_what_we_speak(v: str) -> None:
    body = example_report_json()
    body["v"] = v
    err = _refused(body)
    assert err.status == 400
    assert err.field == "v"
    assert "1.x" in err.message


@pytest.mark.parametrize(
    "v",
    [None, 1, 1.0, True, ["1.0"], {"major": 1}, "", "1", "1.", ".0", "v1.0", "1.0.0", "1.0 ",
     " 1.0", "1.0\n", "1,0", "1.a", "12345.0", "1.12345", "\u0661.\u0660", "１.０"],
)  # fmt: skip
def test_malformed_versions_are_refused_on_field_v(v: Any) -> None:
    body = example_report_json()
    body["v"] = v
    err = _refused(body)
    assert err.status == 400
    assert err.field == "v"


def test_missing_version_is_refused_on_field_v() -> None:
    body = example_report_json()
    del body["v"]
    assert _refused(body).field == "v"


@given(v=st.text(max_size=12))
@FAST
def test_parse_version_accepts_exactly_ascii_major_dot_minor(v: str) -> None:
    import re

    try:
        major, minor = parse_version(v)
    except ProtocolError as err:
        assert err.field == "v"
        assert not re.fullmatch(r"1\.[0-9]{1,4}", v, flags=re.ASCII)
    else:
        assert re.fullmatch(r"[0-9]{1,4}\.[0-9]{1,4}", v, flags=re.ASCII), repr(v)
        assert (major, minor) == tuple(int(p) for p in v.split("."))


@pytest.mark.parametrize(
    "garbage",
    [
        {"agent": None, "sent_at": 5, "events": "nope"},
        {"agent": {}, "events": [{"kind": "nope"}]},
        {"events": [None] * 20_000},
        {},
    ],
)
def test_version_is_checked_before_anything_else(garbage: dict[str, Any]) -> None:
    body = {"v": "2.0", **garbage}
    err = _refused(body)
    assert err.field == "v"
    assert "1.x" in err.message
    assert err.status == 400


# --------------------------------------------------------------------------
# Unknown optional fields are ignored


def test_unknown_fields_are_ignored_in_the_envelope_agent_and_events() -> None:
    body = example_report_json()
    body["compression_hint"] = {"nested": [1, 2, 3]}
    body["agent"]["hostname"] = "till-3"
    body["agent"]["capabilities"] = ["x", None]
    for i, event in enumerate(body["events"]):
        event["added_in_1_1"] = i
        event["also"] = {"deep": {"deeper": [None, True, "é"]}}
    assert decode_report(to_body(body)) == example_report()


def test_unknown_field_holding_garbage_types_is_still_ignored() -> None:
    body = example_report_json()
    body["events"][0]["loss_pct_v2"] = "not a number"
    body["agent"]["id2"] = None
    assert decode_report(to_body(body)) == example_report()
