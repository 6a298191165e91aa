"""Limits and refusals: sizes, encodings, and the values JSON allows but we do not."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from typing import Any

import pytest

from protocol import ProtocolError, decode_report, decompress, encode_report, gzip_body
from protocol.codec import MAX_BODY_BYTES, MAX_EVENTS_PER_REPORT
from tests.protocol.strategies import check_error, example_report, example_report_json, to_body

MiB = 1024 * 1024


def _refused(body: bytes, **kwargs: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_report(body, **kwargs)
    check_error(info.value)
    return info.value


def _with_events(n: int) -> bytes:
    body = example_report_json()
    template = body["events"][-1]
    body["events"] = [{**template, "seq": i + 1} for i in range(n)]
    return to_body(body)


def test_more_events_than_max_events_is_413() -> None:
    assert len(decode_report(_with_events(5), max_events=5).events) == 5
    err = _refused(_with_events(6), max_events=5)
    assert err.status == 413
    assert err.field == "events"


def test_max_events_cannot_raise_the_hard_ceiling() -> None:
    body = to_body({**example_report_json(), "events": [None] * (MAX_EVENTS_PER_REPORT + 1)})
    err = _refused(body, max_events=10 * MAX_EVENTS_PER_REPORT)
    assert err.status == 413


def test_gzip_bomb_is_413_without_inflating_it_all() -> None:
    zeros = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(MiB)
    bomb = b"".join(zeros.compress(chunk) for _ in range(50)) + zeros.flush()
    assert len(bomb) < MiB // 4  # 50 MiB of zeros in well under a megabyte
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError) as info:
            decompress(bomb, "gzip", max_bytes=MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.status == 413
    assert peak < 8 * MiB, f"inflating the bomb allocated {peak} bytes"


def test_gzip_just_under_the_limit_passes_and_just_over_is_413() -> None:
    assert decompress(gzip_body(bytes(1000)), "gzip", max_bytes=1000) == bytes(1000)
    with pytest.raises(ProtocolError) as info:
        decompress(gzip_body(bytes(1001)), "gzip", max_bytes=1000)
    assert info.value.status == 413


def test_identity_body_over_the_limit_is_413() -> None:
    assert decompress(bytes(1000), None, max_bytes=1000) == bytes(1000)
    for encoding in (None, "identity", "IDENTITY"):
        with pytest.raises(ProtocolError) as info:
            decompress(bytes(1001), encoding, max_bytes=1000)
        assert info.value.status == 413
    with pytest.raises(ProtocolError) as info:
        decompress(bytes(MAX_BODY_BYTES + 1), None)
    assert info.value.status == 413


@pytest.mark.parametrize("encoding", ["br", "deflate", "zstd", "x-gzip", "gzip, br", "\x00"])
def test_unknown_encoding_is_415(encoding: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decompress(gzip_body(b"{}"), encoding)
    check_error(info.value)
    assert info.value.status == 415


def test_truncated_gzip_is_400() -> None:
    body = gzip.compress(encode_report(example_report()))
    for cut in (0, 1, 10, len(body) // 2, len(body) - 8, len(body) - 1):
        with pytest.raises(ProtocolError) as info:
            decompress(body[:cut], "gzip")
        assert info.value.status == 400


def test_gzip_with_a_bad_checksum_is_400() -> None:
    body = bytearray(gzip_body(b'{"hello": "world"}'))
    body[-8] ^= 0xFF  # CRC32
    with pytest.raises(ProtocolError) as info:
        decompress(bytes(body), "gzip")
    assert info.value.status == 400


def _event_body(**change: Any) -> bytes:
    body = example_report_json()
    body["events"][0].update(change)
    return to_body(body)


def test_duplicate_seq_in_one_report_is_400() -> None:
    body = example_report_json()
    body["events"][3]["seq"] = body["events"][1]["seq"]
    err = _refused(to_body(body))
    assert err.status == 400
    assert err.field == "events[3].seq"


@pytest.mark.parametrize("seq", [0, -1])
def test_seq_below_1_on_the_wire_is_400(seq: int) -> None:
    err = _refused(_event_body(seq=seq))
    assert err.status == 400
    assert err.field == "events[0].seq"


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
@pytest.mark.parametrize(
    "where",
    [
        b'{"v":"1.0","agent":{"id":"a","terminal_id":"t","store_id":"s","version":"1"},'
        b'"sent_at":"2024-01-01T00:00:00Z","events":[{"seq":1,"ts":"2024-01-01T00:00:00Z",'
        b'"kind":"probe_window","probe":"icmp","target":"x","role":"link","window_s":1,'
        b'"sent":1,"ok":1,"loss_pct":%s}]}',
        b'{"v":"1.0","agent":{"id":"a","terminal_id":"t","store_id":"s","version":"1"},'
        b'"sent_at":"2024-01-01T00:00:00Z","events":[{"seq":1,"ts":"2024-01-01T00:00:00Z",'
        b'"kind":"agent_event","event":"x","details":{"k":%s}}]}',
        # not valid JSON even where the value would be ignored
        b'{"v":"1.0","agent":{"id":"a","terminal_id":"t","store_id":"s","version":"1"},'
        b'"sent_at":"2024-01-01T00:00:00Z","events":[],"future":%s}',
        # nor in the data of an event kind from a newer minor (we keep and re-send it)
        b'{"v":"1.4","agent":{"id":"a","terminal_id":"t","store_id":"s","version":"1"},'
        b'"sent_at":"2024-01-01T00:00:00Z","events":[{"seq":1,"ts":"2024-01-01T00:00:00Z",'
        b'"kind":"later","x":%s}]}',
    ],
    ids=["typed-field", "scalar-map", "unknown-field", "unknown-kind"],
)
def test_nan_and_infinity_are_400(token: bytes, where: bytes) -> None:
    body = where.replace(b"%s", token)
    assert decode_report(where.replace(b"%s", b"1")) is not None  # the template is valid
    err = _refused(body)
    assert err.status == 400


# Out-of-range numbers and lone surrogates may be refused by the JSON parser
# itself (no field to name yet) or by the field's converter (naming it).


def test_number_overflowing_to_infinity_is_400() -> None:
    raw = _event_body(loss_pct=12.25).replace(b"12.25", b"1e400")  # not a finite double
    err = _refused(raw)
    assert err.status == 400
    assert err.field in (None, "events[0].loss_pct")


def test_integer_too_large_for_a_float_field_is_400() -> None:
    err = _refused(_event_body(window_s=10**400))
    assert err.status == 400
    assert err.field in (None, "events[0].window_s")


def test_fraction_where_an_integer_is_expected_is_400() -> None:
    for value in (1.5, 1.0, "1"):
        err = _refused(_event_body(sent=value))
        assert err.field == "events[0].sent"


def test_unknown_event_data_with_out_of_range_float_is_400() -> None:
    body = example_report_json()
    body["v"] = "1.1"
    body["events"] = [{"seq": 1, "ts": "2024-01-01T00:00:00Z", "kind": "later", "x": 1}]
    raw = to_body(body).replace(b'"x": 1', b'"x": 1e999')
    err = _refused(raw)
    assert err.status == 400
    assert err.field is None or err.field.startswith("events[0]")


@pytest.mark.parametrize(
    "ts",
    ["2024-01-01T00:00:00", "2024-01-01 00:00:00", "2024-01-01", "2024-01-01T00:00:00.123"],
)
def test_timestamp_without_zone_is_400(ts: str) -> None:
    err = _refused(_event_body(ts=ts))
    assert err.status == 400
    assert err.field == "events[0].ts"
    body = example_report_json()
    body["sent_at"] = ts
    assert _refused(to_body(body)).field == "sent_at"


@pytest.mark.parametrize(
    "ts",
    ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "yesterday", "", "x" * 41, 17],
)
def test_timestamps_that_cannot_be_utc_are_400(ts: Any) -> None:
    err = _refused(_event_body(ts=ts))
    assert err.status == 400
    assert err.field == "events[0].ts"


@pytest.mark.parametrize("field", ["sent", "ok", "loss_pct", "window_s", "rtt_avg_ms", "seq"])
@pytest.mark.parametrize("value", [True, False])
def test_bool_where_a_number_is_expected_is_400(field: str, value: bool) -> None:
    err = _refused(_event_body(**{field: value}))
    assert err.status == 400
    assert err.field == f"events[0].{field}"
    assert "boolean" in err.message


@pytest.mark.parametrize(("field", "limit"), [("probe", 32), ("target", 256), ("acquirer", 256)])
def test_string_over_max_length_is_400(field: str, limit: int) -> None:
    assert decode_report(_event_body(**{field: "é" * limit}))  # characters, not bytes
    err = _refused(_event_body(**{field: "x" * (limit + 1)}))
    assert err.status == 400
    assert err.field == f"events[0].{field}"


def test_agent_id_over_max_length_is_400() -> None:
    body = example_report_json()
    body["agent"]["id"] = "a" * 129
    err = _refused(to_body(body))
    assert err.field == "agent.id"


def test_too_many_map_entries_and_long_keys_are_400() -> None:
    err = _refused(_event_body(extras={str(i): i for i in range(65)}))
    assert err.field == "events[0].extras"
    err = _refused(_event_body(errors={"k" * 65: 1}))
    assert err.field == "events[0].errors"


def test_lone_surrogates_are_400() -> None:
    # valid JSON (\ud800 escapes) but no UTF-8 encoding: we could never send it on
    body = to_body(example_report_json()).replace(b'"icmp"', b'"\\ud800icmp"')
    assert _refused(body).field in (None, "events[0].probe")
    body = to_body(example_report_json()).replace(b'"timeout": 1', b'"\\udfff": 1')
    assert _refused(body).field in (None, "events[0].errors")
    # a surrogate pair is one character, and fine
    body = to_body(example_report_json()).replace(b'"icmp"', b'"\\ud83d\\ude00"')
    assert decode_report(body).events[0].probe == "\U0001f600"  # type: ignore[attr-defined]
