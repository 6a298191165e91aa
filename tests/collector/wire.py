"""Reports to send and a small HTTP client for collector tests (stdlib only)."""

from __future__ import annotations

import http.client
import json
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import protocol
from protocol import AgentEvent, AgentInfo, DeviceStatus, Event, ProbeWindow, Report, Txn

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def make_event(seq: int) -> Event:
    """A valid event of a kind that depends on ``seq`` (so reports mix kinds)."""
    ts = T0 + timedelta(seconds=seq)
    match seq % 4:
        case 0:
            return Txn(seq=seq, ts=ts, txn_id=f"tx-{seq}", outcome="timeout", in_doubt=True)
        case 1:
            return ProbeWindow(
                seq=seq, ts=ts, probe="tcp", target="acq.example:443", role="acquirer",
                acquirer="ACQ", window_s=60.0, sent=10, ok=9, loss_pct=10.0, rtt_avg_ms=21.5,
            )  # fmt: skip
        case 2:
            return DeviceStatus(seq=seq, ts=ts, device="pinpad", device_kind="pinpad", state="ok")
        case _:
            return AgentEvent(seq=seq, ts=ts, event="start", details={"note": "naïve ✓"})


def make_report(
    seqs: Iterable[int],
    *,
    terminal_id: str = "T-1",
    store_id: str = "S-1",
    agent_id: str = "agent-1",
    version: str = "0.1.0",
) -> Report:
    return Report(
        agent=AgentInfo(id=agent_id, terminal_id=terminal_id, store_id=store_id, version=version),
        sent_at=T0 + timedelta(hours=1),
        events=tuple(make_event(s) for s in seqs),
    )


def report_json(report: Report) -> dict[str, Any]:
    """A report as plain JSON values, to break on purpose."""
    data: dict[str, Any] = json.loads(protocol.encode_report(report))
    return data


@dataclass
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    url: str,
    path: str,
    *,
    body: bytes | None = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    method: str | None = None,
) -> Reply:
    """One HTTP request with urllib; an HTTP error status is a Reply, not an exception."""
    req = urllib.request.Request(url + path, data=body, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return Reply(resp.status, resp.read(), dict(resp.headers))
    except urllib.error.HTTPError as err:
        with err:
            return Reply(err.code, err.read(), dict(err.headers))


def post_report(url: str, body: bytes, token: str | None, **headers: str) -> Reply:
    return request(url, "/api/v1/reports", body=body, token=token, headers=headers)


def raw_connection(url: str) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=30)


def rows(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Query the collector's SQLite file directly (a separate, read-only connection)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def count(db_path: Path, table: str) -> int:
    return int(rows(db_path, f"SELECT count(*) FROM {table}")[0][0])
