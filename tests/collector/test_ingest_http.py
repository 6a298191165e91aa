"""POST /api/v1/reports against a real collector process and its SQLite file."""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import protocol
from tests.collector.wire import (
    count,
    make_report,
    post_report,
    raw_connection,
    report_json,
    request,
    rows,
)
from tests.helpers import CollectorProc, create_token, start_collector

MiB = 1024 * 1024


def _agent_token(collector: CollectorProc) -> str:
    return create_token(collector.db_path, terminal="T-1", store="S-1")


def test_valid_report_is_stored_once_with_its_fields(collector: CollectorProc) -> None:
    token = _agent_token(collector)
    report = make_report([1, 2, 3, 4])

    reply = post_report(collector.url, protocol.encode_report(report), token)

    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    assert protocol.decode_ack(reply.body) == protocol.Ack(acked=(1, 2, 3, 4), stored=4)
    stored = rows(
        collector.db_path,
        "SELECT agent_id, seq, terminal_id, store_id, kind, ts, body, received_at"
        " FROM events ORDER BY seq",
    )
    assert [r[:6] for r in stored] == [
        (
            "agent-1",
            ev.seq,
            "T-1",
            "S-1",
            ev.kind,
            protocol.format_datetime(ev.ts),
        )
        for ev in report.events
    ]
    assert all(protocol.parse_datetime(r[7], "received_at") for r in stored)
    # the stored body decodes back to the very event that was sent
    assert [protocol.decode_event(json.loads(r[6])) for r in stored] == list(report.events)
    ((terminal, store, agent, version),) = rows(
        collector.db_path, "SELECT terminal_id, store_id, agent_id, agent_version FROM terminals"
    )
    assert (terminal, store, agent, version) == ("T-1", "S-1", "agent-1", "0.1.0")


def test_same_report_twice_is_acked_twice_and_stored_once(collector: CollectorProc) -> None:
    token = _agent_token(collector)
    body = protocol.encode_report(make_report([1, 2, 3]))

    first = protocol.decode_ack(post_report(collector.url, body, token).body)
    second = protocol.decode_ack(post_report(collector.url, body, token).body)
    overlap = protocol.decode_ack(
        post_report(collector.url, protocol.encode_report(make_report([3, 4, 5])), token).body
    )

    assert first == protocol.Ack(acked=(1, 2, 3), stored=3, duplicates=0)
    assert second == protocol.Ack(acked=(1, 2, 3), stored=0, duplicates=3)
    assert overlap == protocol.Ack(acked=(3, 4, 5), stored=2, duplicates=1)
    assert count(collector.db_path, "events") == 5


def test_gzip_report_is_accepted(collector: CollectorProc) -> None:
    token = _agent_token(collector)
    body = protocol.gzip_body(protocol.encode_report(make_report(range(1, 51))))

    reply = post_report(collector.url, body, token, **{"Content-Encoding": "gzip"})

    assert reply.status == 200, reply.body
    assert protocol.decode_ack(reply.body).stored == 50
    assert count(collector.db_path, "events") == 50


def test_the_reported_backlog_is_kept_per_terminal(collector: CollectorProc) -> None:
    token = _agent_token(collector)

    def post(seqs: list[int], backlog: int | None) -> None:
        report = dataclasses.replace(make_report(seqs), backlog=backlog)
        reply = post_report(
            collector.url,
            protocol.gzip_body(protocol.encode_report(report)),
            token,
            **{"Content-Encoding": "gzip"},
        )
        assert reply.status == 200, reply.body

    def stored() -> Any:
        return rows(collector.db_path, "SELECT spool_backlog FROM terminals")[0][0]

    post([1, 2], None)  # an agent from before backlog: nothing said, nothing stored
    assert stored() is None
    post([3, 4], 250)
    assert stored() == 250
    post([5, 6], 0)
    assert stored() == 0
    post([7], None)  # an older agent again (a downgrade): the last figure stays
    assert stored() == 0
    post([8], 9)
    assert stored() == 9
    assert count(collector.db_path, "events") == 8


def test_empty_report_checks_the_token_and_touches_last_seen(collector: CollectorProc) -> None:
    token = _agent_token(collector)
    post_report(collector.url, protocol.encode_report(make_report([1])), token)
    (before,) = rows(collector.db_path, "SELECT last_seen FROM terminals")

    reply = post_report(collector.url, protocol.encode_report(make_report([])), token)

    assert reply.status == 200
    assert protocol.decode_ack(reply.body) == protocol.Ack(acked=())
    (after,) = rows(collector.db_path, "SELECT last_seen FROM terminals")
    assert after[0] > before[0]
    assert count(collector.db_path, "events") == 1


# --- rejections: right status, JSON error naming the problem, nothing stored ---------------


@dataclass(frozen=True)
class Bad:
    """A request the collector must refuse."""

    body: Callable[[], bytes]
    token: str | None  # key into shared_tokens, or a literal "!token"
    status: int
    says: str  # a fragment of the error message
    field: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


def _valid() -> bytes:
    return protocol.encode_report(make_report([1, 2]))


def _with(change: Callable[[dict[str, Any]], None]) -> Callable[[], bytes]:
    def build() -> bytes:
        data = report_json(make_report([1, 2]))
        change(data)
        return json.dumps(data).encode()

    return build


def _set_seq(data: dict[str, Any]) -> None:
    data["events"][0]["seq"] = "one"


def _set_major(data: dict[str, Any]) -> None:
    data["v"] = "2.0"


def _drop_terminal(data: dict[str, Any]) -> None:
    del data["agent"]["terminal_id"]


def _backlog(value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["backlog"] = value

    return change


def _gzip_bomb() -> bytes:
    return gzip.compress(b" " * (9 * MiB), compresslevel=9)


BAD = {
    "malformed-json": Bad(lambda: b'{"v": "1.0", "agent": ', "agent", 400, "not valid JSON"),
    "not-an-object": Bad(lambda: b"[1, 2]", "agent", 400, "expected an object"),
    "wrong-type": Bad(_with(_set_seq), "agent", 400, "events[0].seq", field="events[0].seq"),
    "missing-field": Bad(_with(_drop_terminal), "agent", 400, "terminal_id"),
    "unknown-major": Bad(_with(_set_major), "agent", 400, "speaks 1.x", field="v"),
    "negative-backlog": Bad(_with(_backlog(-1)), "agent", 400, "minimum 0", field="backlog"),
    "string-backlog": Bad(_with(_backlog("5")), "agent", 400, "integer", field="backlog"),
    "float-backlog": Bad(_with(_backlog(2.5)), "agent", 400, "integer", field="backlog"),
    "gzip-bomb": Bad(_gzip_bomb, "agent", 413, "inflates", headers=(("Content-Encoding", "gzip"),)),
    "bad-gzip": Bad(_valid, "agent", 400, "gzip", headers=(("Content-Encoding", "gzip"),)),
    "unsupported-encoding": Bad(_valid, "agent", 415, "br", headers=(("Content-Encoding", "br"),)),
    "no-token": Bad(_valid, None, 401, "Authorization"),
    "unknown-token": Bad(_valid, "!not-a-token", 401, "unknown token"),
    "viewer-token": Bad(_valid, "viewer", 403, "viewer token"),
    "other-terminal": Bad(_valid, "other_terminal", 403, "terminal_id 'T-1'"),
    "other-store": Bad(_valid, "other_store", 403, "store_id 'S-1'"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_request_is_refused_and_nothing_stored(
    shared_collector: CollectorProc, shared_tokens: dict[str, str], case: Bad
) -> None:
    if case.token is None:
        token = None
    elif case.token.startswith("!"):
        token = case.token[1:]
    else:
        token = shared_tokens[case.token]

    reply = post_report(shared_collector.url, case.body(), token, **dict(case.headers))

    assert reply.status == case.status, reply.body
    error = reply.json()
    assert case.says in error["error"]
    if case.field is not None:
        assert error["field"] == case.field
    assert count(shared_collector.db_path, "events") == 0
    assert count(shared_collector.db_path, "terminals") == 0
    assert request(shared_collector.url, "/healthz").json() == {"status": "ok"}


def test_malformed_authorization_header_is_401(
    shared_collector: CollectorProc, shared_tokens: dict[str, str]
) -> None:
    reply = post_report(
        shared_collector.url, _valid(), None, Authorization=f"Basic {shared_tokens['agent']}"
    )
    assert reply.status == 401
    assert "Bearer" in reply.json()["error"]
    assert reply.headers["WWW-Authenticate"] == "Bearer"


def test_too_many_events_is_413(tmp_path: Any) -> None:
    collector = start_collector(tmp_path / "c.db", ["--max-events-per-report", "3"])
    try:
        token = _agent_token(collector)
        reply = post_report(collector.url, protocol.encode_report(make_report([1, 2, 3, 4])), token)
        assert reply.status == 413
        assert reply.json()["field"] == "events"
        assert count(collector.db_path, "events") == 0
    finally:
        collector.stop()


def test_content_length_over_the_limit_is_413_without_reading_the_body(
    shared_collector: CollectorProc, shared_tokens: dict[str, str]
) -> None:
    conn = raw_connection(shared_collector.url)
    try:
        conn.putrequest("POST", "/api/v1/reports")
        conn.putheader("Authorization", f"Bearer {shared_tokens['agent']}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(100 * MiB))
        conn.endheaders()  # and never send the 100 MiB: the answer must not wait for it
        resp = conn.getresponse()
        assert resp.status == 413
        assert "larger than" in json.loads(resp.read())["error"]
    finally:
        conn.close()
    assert count(shared_collector.db_path, "events") == 0
    assert request(shared_collector.url, "/healthz").json() == {"status": "ok"}


def test_chunked_body_over_the_limit_is_413(tmp_path: Any) -> None:
    collector = start_collector(tmp_path / "c.db", ["--max-body-bytes", "4096"])
    try:
        token = _agent_token(collector)
        conn = raw_connection(collector.url)
        chunks = iter([b"{" + b" " * 4000, b" " * 4000, b"}"])  # no Content-Length: chunked
        conn.request(
            "POST",
            "/api/v1/reports",
            body=chunks,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        assert resp.status == 413
        assert "larger than 4096" in json.loads(resp.read())["error"]
        conn.close()
        assert count(collector.db_path, "events") == 0
        assert request(collector.url, "/healthz").json() == {"status": "ok"}
    finally:
        collector.stop()


def test_unknown_route_and_method_answer_json(shared_collector: CollectorProc) -> None:
    assert request(shared_collector.url, "/nope").status == 404
    wrong = request(shared_collector.url, "/api/v1/reports", method="GET")
    assert wrong.status == 405
    assert "error" in wrong.json()


def test_sigterm_stops_the_collector_cleanly(collector: CollectorProc) -> None:
    assert collector.stop() == 0
    events = [e["event"] for e in collector.log_events()]
    assert events[-2:] == ["collector_stopping", "collector_stopped"]
