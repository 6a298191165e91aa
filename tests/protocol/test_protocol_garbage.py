"""The garbage invariant, as h11 states it: whatever arrives, we either parse it
or raise our own ProtocolError — never any other exception.

Plus whole input, every truncated prefix, and trailing bytes.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

import protocol
from protocol import (
    EVENT_KINDS,
    EVENT_TYPES,
    ProtocolError,
    Report,
    decode_ack,
    decode_report,
    decompress,
    encode_report,
    gzip_body,
)
from protocol.fields import specs
from tests.protocol.strategies import (
    BIG,
    FAST,
    THOROUGH,
    all_paths,
    check_error,
    check_reencodes,
    decode_or_error,
    dumps_garbage,
    example_report,
    field_names,
    garbage_json,
    get_at,
    is_within,
    json_values,
    object_paths,
    path_text,
    reports,
    wire_type_at,
)

# --------------------------------------------------------------------------
# Arbitrary bytes


@given(body=st.binary(max_size=2048))
@THOROUGH
@example(body=b"")
@example(body=b"\xef\xbb\xbf{}")  # UTF-8 BOM
@example(body=b"\xff\xfe{\x00}\x00")  # UTF-16
@example(body=b"[" * 100_000)  # deeper than the recursion limit
@example(body=b'{"v":"1.0","agent":' + b"[" * 100_000)
def test_arbitrary_bytes_decode_or_raise_protocol_error(body: bytes) -> None:
    result = decode_or_error(body)
    if isinstance(result, Report):
        check_reencodes(result)


@st.composite
def mutated_reports(draw: st.DrawFn) -> bytes:
    """A valid encoded report with a few bytes flipped, inserted or cut out."""
    body = bytearray(encode_report(draw(reports(max_events=3))))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(body)))
        how = draw(st.sampled_from(["flip", "insert", "delete"]))
        if how == "flip" and at < len(body):
            body[at] = draw(st.integers(min_value=0, max_value=255))
        elif how == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            body[at : at + draw(st.integers(min_value=1, max_value=16))] = b""
    return bytes(body)


@given(body=mutated_reports())
@BIG
def test_mutated_reports_decode_or_raise_protocol_error(body: bytes) -> None:
    result = decode_or_error(body)
    if isinstance(result, Report):
        check_reencodes(result)


@given(body=st.binary(max_size=2048))
@THOROUGH
@example(body=b"")
@example(body=b"\x1f\x8b")
@example(body=gzip_body(b"{}")[:-1])
def test_arbitrary_bytes_into_gunzip(body: bytes) -> None:
    try:
        out = decompress(body, "gzip", max_bytes=1 << 16)
    except ProtocolError as err:
        check_error(err)
    else:
        assert isinstance(out, bytes)
        assert len(out) <= 1 << 16


@given(body=st.binary(max_size=1024), encoding=st.text(max_size=12) | st.none())
@FAST
def test_any_content_encoding_decompresses_or_raises_protocol_error(
    body: bytes, encoding: str | None
) -> None:
    try:
        decompress(body, encoding)
    except ProtocolError as err:
        check_error(err)
        if err.status == 415:
            assert (encoding or "").strip().lower() not in ("", "identity", "gzip")


@given(body=st.binary(max_size=1024) | garbage_json.map(dumps_garbage))
@THOROUGH
@example(body=b'{"acked":[1,2],"stored":"x"}')
@example(body=b'{"acked":[1e400]}')
def test_arbitrary_bytes_into_decode_ack(body: bytes) -> None:
    try:
        ack = decode_ack(body)
    except ProtocolError as err:
        check_error(err)
    else:
        assert decode_ack(protocol.encode_ack(ack)) == ack


# --------------------------------------------------------------------------
# Arbitrary JSON values


@given(value=garbage_json, raw_unicode=st.booleans())
@THOROUGH
def test_arbitrary_json_at_the_top_level(value: Any, raw_unicode: bool) -> None:
    result = decode_or_error(dumps_garbage(value, raw_unicode=raw_unicode))
    if isinstance(result, Report):
        check_reencodes(result)


def _allowed_elsewhere(path: tuple[str | int, ...], err: ProtocolError) -> bool:
    """The few errors a valid-looking replacement may legitimately cause elsewhere."""
    if len(path) < 2 or path[0] != "events":
        return False
    event_path = path_text(path[:2])
    if path[2:] == ("kind",) or path[2:] == ():
        # another known kind (or a whole new event): any field of that event
        return is_within(err.field, event_path)
    if path[2:] == ("seq",) and "appears twice" in err.message:
        return bool(err.field and re.fullmatch(r"events\[\d+\]\.seq", err.field))
    if path[2:] == ("sent",):  # ok <= sent is checked on ok
        return err.field == event_path + ".ok"
    return False


@given(report=reports(max_events=3), data=st.data(), raw_unicode=st.booleans())
@BIG
def test_garbage_spliced_into_a_valid_report_names_the_field(
    report: Report, data: st.DataObject, raw_unicode: bool
) -> None:
    tree = json.loads(encode_report(report))
    path = data.draw(st.sampled_from(all_paths(tree)), label="path")
    new = data.draw(garbage_json, label="new value")
    parent = get_at(tree, path[:-1])
    parent[path[-1]] = new
    result = decode_or_error(dumps_garbage(tree, raw_unicode=raw_unicode))
    if isinstance(result, Report):
        event("accepted")
        check_reencodes(result)
        return
    assert result.status == 400, result  # too few events for a 413
    if "not valid JSON" in result.message:
        event("refused: not JSON")
        return  # NaN, Infinity, or bytes that are not UTF-8: refused before any field
    event("refused: field named")
    where = path_text(path)
    assert is_within(result.field, where) or _allowed_elsewhere(path, result), (
        where,
        result,
    )


@given(report=reports(max_events=3), data=st.data())
@BIG
def test_deleting_a_field_refuses_required_and_defaults_optional(
    report: Report, data: st.DataObject
) -> None:
    tree = json.loads(encode_report(report))
    at = data.draw(st.sampled_from(object_paths(tree)), label="object")
    obj = get_at(tree, at)
    key = data.draw(st.sampled_from(sorted(obj)), label="key")
    del obj[key]
    cls = wire_type_at(json.loads(encode_report(report)), at)  # before "kind" was deleted
    result = decode_or_error(json.dumps(tree).encode())
    required = (
        {"v", "agent", "sent_at", "events"}
        if cls is None
        else {s.name for s in specs(cls) if s.required} | {"kind"}
    )
    where = path_text((*at, key))
    if key in required:
        assert isinstance(result, ProtocolError), where
        assert result.field == where, (where, result)
        assert result.status == 400
    else:
        assert isinstance(result, Report), (where, result)
        # the envelope's only optional field is backlog
        (spec,) = (s for s in specs(cls or Report) if s.name == key)
        assert getattr(get_at_report(result, at), key) == spec.default


def get_at_report(report: Report, at: tuple[str | int, ...]) -> Any:
    if at == ():
        return report
    if at == ("agent",):
        return report.agent
    assert at[0] == "events" and isinstance(at[1], int)
    return report.events[at[1]]


@given(
    report=reports(max_events=3),
    data=st.data(),
    extra=st.dictionaries(st.text(max_size=12), json_values, min_size=1, max_size=4),
)
@BIG
def test_unknown_fields_are_ignored_at_every_level(
    report: Report, data: st.DataObject, extra: dict[str, Any]
) -> None:
    tree = json.loads(encode_report(report))
    at = data.draw(st.sampled_from(object_paths(tree)), label="object")
    known = field_names(wire_type_at(tree, at))
    get_at(tree, at).update({k: v for k, v in extra.items() if k not in known})
    assert decode_report(json.dumps(tree).encode()) == report


# --------------------------------------------------------------------------
# Whole input, truncated prefixes, trailing bytes


@pytest.mark.parametrize("compressed", [False, True], ids=["identity", "gzip"])
def test_every_prefix_of_a_report_is_refused(compressed: bool) -> None:
    report = example_report()
    wire = encode_report(report)
    body = gzip_body(wire) if compressed else wire
    for cut in range(len(body)):
        with pytest.raises(ProtocolError) as info:
            if compressed:
                decode_report(decompress(body[:cut], "gzip"))
            else:
                decode_report(body[:cut])
        check_error(info.value)
        assert info.value.status == 400
    assert decode_report(decompress(body, "gzip") if compressed else body) == report


@given(report=reports(max_events=2), data=st.data())
@FAST
def test_generated_prefixes_are_refused(report: Report, data: st.DataObject) -> None:
    wire = encode_report(report)
    cut = data.draw(st.integers(min_value=0, max_value=len(wire) - 1), label="cut")
    with pytest.raises(ProtocolError):
        decode_report(wire[:cut])
    gz = gzip_body(wire)
    gz_cut = data.draw(st.integers(min_value=0, max_value=len(gz) - 1), label="gzip cut")
    with pytest.raises(ProtocolError) as info:
        decompress(gz[:gz_cut], "gzip")
    assert info.value.status == 400


_JSON_WHITESPACE = b" \t\r\n"


@given(report=reports(max_events=2), trailing=st.binary(min_size=1, max_size=64))
@FAST
@example(report=example_report(), trailing=b"x")
@example(report=example_report(), trailing=b"{}")
@example(report=example_report(), trailing=b"\x00")
@example(report=example_report(), trailing=b"\n")
def test_trailing_bytes_after_the_json_are_refused(report: Report, trailing: bytes) -> None:
    result = decode_or_error(encode_report(report) + trailing)
    if trailing.strip(_JSON_WHITESPACE):
        assert isinstance(result, ProtocolError)
        assert result.status == 400
    else:  # RFC 8259: JSON-text = ws value ws
        assert result == report


@given(trailing=st.binary(min_size=1, max_size=64))
@FAST
@example(trailing=gzip_body(b"more"))  # a second gzip member must not vanish silently
def test_trailing_bytes_after_the_gzip_stream_are_refused(trailing: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decompress(gzip_body(encode_report(example_report())) + trailing, "gzip")
    assert info.value.status == 400


def test_whole_report_decodes() -> None:
    report = example_report()
    assert decode_report(encode_report(report)) == report
    assert {e.kind for e in decode_report(encode_report(report)).events} == set(EVENT_KINDS)
    assert len(report.events) == len(EVENT_TYPES)


def test_splicing_reaches_into_nested_values() -> None:
    # guard against a helper rewrite that makes the splice test shallow
    tree = json.loads(encode_report(example_report()))
    paths = {path_text(p) for p in all_paths(tree)}
    assert {"v", "agent.id", "events[0].errors.timeout", "events[2].flags[0]"} <= paths
