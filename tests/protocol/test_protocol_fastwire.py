"""The collector's fast path agrees with the reference decoder.

:func:`protocol.fastwire.decode_report_rows` must accept exactly what
:func:`protocol.decode_report` accepts, yield the same events, and refuse
with the very same ProtocolError (status, message, field).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from protocol import ProtocolError, Report, decode_event, decode_report, encode_report
from protocol.fastwire import _fast, _Refused, decode_report_rows, wire_report
from tests.protocol.strategies import (
    BIG,
    all_paths,
    dumps_garbage,
    garbage_json,
    get_at,
    reports,
)


def reference(raw: bytes) -> Report | ProtocolError:
    try:
        return decode_report(raw)
    except ProtocolError as err:
        return err


def assert_same_error(err: ProtocolError, expected: Report | ProtocolError) -> None:
    assert isinstance(expected, ProtocolError), f"only the fast side refused: {err}"
    assert (err.status, err.message, err.field) == (
        expected.status,
        expected.message,
        expected.field,
    )


def assert_agrees(raw: bytes) -> str:
    """Both decoders on the same bytes; returns which path judged it."""
    expected = reference(raw)
    try:
        fast = _fast(raw, 10_000)
    except _Refused:
        fast = None
    except ProtocolError as err:  # only the version check raises here
        assert_same_error(err, expected)
        return "refused by both"
    if fast is not None:
        assert isinstance(expected, Report), (
            f"fast path accepted what the reference refuses: {expected}"
        )
        assert fast.agent == expected.agent
        assert fast.backlog == expected.backlog
        assert [(e.seq, e.kind, e.ts) for e in fast.events] == [
            (e.seq, e.kind, e.ts) for e in wire_report(expected).events
        ]
        assert [decode_event(json.loads(e.body)) for e in fast.events] == list(expected.events)
        return "fast"
    # The public function falls back to the reference: same answer either way.
    try:
        rows = decode_report_rows(raw)
    except ProtocolError as err:
        assert_same_error(err, expected)
        return "refused by both"
    assert isinstance(expected, Report)
    assert rows == wire_report(expected)
    return "reference"


@given(report=reports(max_events=6))
@BIG
def test_valid_reports_take_the_fast_path_with_the_same_events(report: Report) -> None:
    raw = encode_report(report)
    assert assert_agrees(raw) == "fast"


@given(report=reports(max_events=3, unknown=True))
@BIG
def test_newer_minor_reports_go_to_the_reference(report: Report) -> None:
    assert assert_agrees(encode_report(report)) in ("reference", "refused by both")


@given(report=reports(max_events=3), data=st.data(), raw_unicode=st.booleans())
@BIG
def test_garbage_spliced_into_a_report_is_judged_alike(
    report: Report, data: st.DataObject, raw_unicode: bool
) -> None:
    tree: Any = json.loads(encode_report(report))
    path = data.draw(st.sampled_from(all_paths(tree)), label="path")
    get_at(tree, path[:-1])[path[-1]] = data.draw(garbage_json, label="new value")
    assert_agrees(dumps_garbage(tree, raw_unicode=raw_unicode))


@given(report=reports(max_events=3), data=st.data())
@BIG
def test_mutated_bytes_are_judged_alike(report: Report, data: st.DataObject) -> None:
    body = bytearray(encode_report(report))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        at = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
        body[at] = data.draw(st.integers(min_value=0, max_value=255))
    assert_agrees(bytes(body))


def test_limits_and_duplicates_are_the_reference_errors() -> None:
    from tests.protocol.strategies import example_report_json, to_body

    data = example_report_json()
    data["events"] = data["events"] * 2  # the same seq twice
    assert assert_agrees(to_body(data)) == "refused by both"
    report = encode_report(
        Report(
            agent=decode_report(to_body(example_report_json())).agent,
            sent_at=decode_report(to_body(example_report_json())).sent_at,
        )
    )
    assert assert_agrees(report) == "fast"
    try:
        decode_report_rows(to_body(example_report_json()), max_events=0)
    except ProtocolError as err:
        assert err.status == 413
    else:
        raise AssertionError("max_events=0 must refuse a report with events")
