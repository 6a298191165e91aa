"""A small fleet in a real collector, for the tests of what people see (/metrics, posmon CLI).

Terminals register the real way: each agent posts a report over HTTP with its
own token, and the collector's correlator reads those events. The rest (probe
and device state, the host sample, payments with their cause, incidents,
alerts) is written into the collector's SQLite file directly, once the
correlator has read everything, so these tests do not depend on the
correlator's rules — only on the schema and the contract of the read side.

The fleet, relative to ``now``:

======== ===== ========= ====================================================
terminal store state      why
======== ===== ========= ====================================================
T-OK     S-1   ok        nothing wrong
T-FAULT  S-1   fault     gateway probe failing; printer near paper end
T-WARN   S-2   warning   printer warning (paper_near_end)
T-HOST   S-2   warning   host CPU at 99 %
T-OFF    S-3   offline   last heard from an hour ago
======== ===== ========= ====================================================

Payments (``txns``): on T-FAULT, ``tx-isp`` (timeout, in doubt, cause isp),
``tx-gw`` (error, cause gateway), ``tx-ok`` (approved), ``tx-old`` (failed two
days ago, cause dns); on T-HOST ``tx-new`` (error, not attributed yet) and
``tx-rev`` (timeout, in doubt but resolved as reversed, cause host).
Incidents: #1 open payments/isp in S-1, #2 open health/device (printer on
T-WARN), #3 closed payments/acquirer_outage. Alert outbox: one webhook
pending, one e-mail given up, one webhook delivered.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import protocol
from collector.correlate.model import IN_DOUBT_ACTION
from collector.correlate.service import CURSOR_NAME
from protocol import AgentEvent, AgentInfo, HostSample, ProbeWindow, Report
from tests.collector.wire import post_report
from tests.helpers import CollectorProc, create_token

TERMINALS = {
    "T-OK": "S-1",
    "T-FAULT": "S-1",
    "T-WARN": "S-2",
    "T-HOST": "S-2",
    "T-OFF": "S-3",
}
ISP_ACTION = "Call the store's internet provider; the line was down."


@dataclass
class Fleet:
    url: str
    db_path: Path
    viewer: str
    agent: str  # T-OK's agent token
    now: datetime


def iso(value: datetime) -> str:
    return protocol.format_datetime(value)


def _register(url: str, token: str, terminal: str, store: str, now: datetime) -> None:
    """Each agent says it started; T-FAULT also sends a host sample and an acquirer probe
    window (its timeline shows them). Only events whose derived state equals what
    :func:`_derive` writes: a running correlator then reaches the same state."""
    events: list[Any] = [AgentEvent(seq=1, ts=now - timedelta(minutes=10), event="start")]
    if terminal == "T-FAULT":
        events += [
            HostSample(
                seq=2, ts=now - timedelta(minutes=9), cpu_pct=12.0, mem_pct=40.0,
                mem_available_bytes=2**30, disk_pct=55.0, disk_free_bytes=2**34, load1=0.5,
                load5=0.4, load15=0.3, uptime_s=90000, boot_time=now - timedelta(days=1),
            ),
            ProbeWindow(
                seq=3, ts=now - timedelta(minutes=8), probe="tcp", target="acq.example:443",
                role="acquirer", acquirer="ACQ-A", window_s=60.0, sent=10, ok=10,
                loss_pct=0.0, rtt_avg_ms=21.5,
            ),
        ]  # fmt: skip
    report = Report(
        agent=AgentInfo(
            id=f"agent-{terminal}", terminal_id=terminal, store_id=store, version="0.1.0"
        ),
        sent_at=now,
        events=tuple(events),
    )
    reply = post_report(url, protocol.encode_report(report), token)
    assert reply.status == 200, reply.body


def _txn(
    terminal: str,
    txn_id: str,
    ts: datetime,
    *,
    outcome: str,
    cause: str | None,
    in_doubt: bool = False,
    resolution: str | None = None,
    action: str | None = None,
    incident_id: int | None = None,
) -> tuple[Any, ...]:
    failed = outcome != "approved"
    evidence = (
        [
            {
                "event_id": f"agent-{terminal}:2",
                "kind": "probe_change",
                "ts": iso(ts - timedelta(minutes=1)),
                "terminal_id": terminal,
                "what": "gateway probe 192.168.1.1 failing (timeout)",
            }
        ]
        if cause
        else []
    )
    if action is None and cause is not None:
        action = IN_DOUBT_ACTION if in_doubt else f"Check the store's {cause}."
    return (
        terminal, txn_id, TERMINALS[terminal], f"agent-{terminal}", 1, iso(ts),
        iso(ts - timedelta(seconds=30)), "sale", "ACQ-A", outcome,
        "91" if outcome == "error" else None, int(outcome == "error"), int(in_doubt), 0,
        resolution, 1250, "EUR", 30000.0 if outcome == "timeout" else 900.0, int(failed),
        cause, cause, 0.9 if cause else None, json.dumps(evidence) if cause else None, action,
        iso(ts) if cause else None, incident_id,
    )  # fmt: skip


def _incident(
    id_: int, kind: str, cause: str, scope: str, started: datetime, **more: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": id_, "key": f"{kind}:{cause}:{id_}", "kind": kind, "cause": cause, "scope": scope,
        "store_id": None, "acquirer": None, "terminal_id": None, "device": None,
        "title": f"{cause} trouble", "action": "Look into it.", "started_at": iso(started),
        "ended_at": None, "last_seen_at": iso(started), "opened_at": iso(started),
        "closed_at": None, "terminals": "[]", "failed_count": 0, "in_doubt_count": 0,
    }  # fmt: skip
    row.update(more)
    return row


def _derive(conn: sqlite3.Connection, now: datetime) -> None:
    conn.execute(
        "UPDATE terminals SET last_seen = ? WHERE terminal_id = 'T-OFF'",
        (iso(now - timedelta(hours=1)),),
    )
    host = {"cpu_pct": 12.0, "mem_pct": 40.0, "disk_pct": 55.0, "load1": 0.5, "uptime_s": 90000}
    conn.execute(
        "UPDATE terminals SET host = ?, host_ts = ?, clock_offset_ms = 12.5, clock_ts = ?,"
        " spool_backlog = 5 WHERE terminal_id = 'T-FAULT'",
        (json.dumps(host), iso(now), iso(now)),
    )
    conn.execute(
        "UPDATE terminals SET host = ?, host_ts = ? WHERE terminal_id = 'T-HOST'",
        (json.dumps({**host, "cpu_pct": 99.0}), iso(now)),
    )
    window = json.dumps({"loss_pct": 100.0, "rtt_avg_ms": None})
    conn.executemany(
        "INSERT OR REPLACE INTO probe_state VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("T-FAULT", "icmp 192.168.1.1 gateway", "icmp", "192.168.1.1", "gateway", None,
             "fail", "timeout", iso(now - timedelta(minutes=9)), iso(now), window),
            ("T-FAULT", "tcp acq.example:443 acquirer", "tcp", "acq.example:443", "acquirer",
             "ACQ-A", "ok", None, iso(now - timedelta(days=1)), iso(now),
             json.dumps({"loss_pct": 0.0, "rtt_avg_ms": 21.5})),
            ("T-OK", "icmp 192.168.1.1 gateway", "icmp", "192.168.1.1", "gateway", None,
             "ok", None, iso(now - timedelta(days=1)), iso(now), None),
            # a failing collector probe does not make a terminal faulty
            ("T-OK", "tcp collector:443 collector", "tcp", "collector:443", "collector", None,
             "fail", "refused", iso(now - timedelta(minutes=3)), iso(now), None),
        ],
    )  # fmt: skip
    conn.executemany(
        "INSERT OR REPLACE INTO device_state VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("T-FAULT", "pinpad", "telium", "ok", "[]", "{}", None,
             iso(now - timedelta(days=1)), iso(now)),
            ("T-FAULT", "printer", "escpos", "warning", '["paper_near_end"]', "{}", None,
             iso(now - timedelta(minutes=8)), iso(now)),
            ("T-WARN", "printer", "escpos", "warning", '["paper_near_end"]', '{"model": "TM"}',
             "paper low", iso(now - timedelta(minutes=20)), iso(now)),
        ],
    )  # fmt: skip
    conn.executemany(
        "INSERT OR REPLACE INTO txns VALUES (" + ", ".join("?" * 26) + ")",
        [
            _txn("T-FAULT", "tx-isp", now - timedelta(minutes=5), outcome="timeout",
                 cause="isp", in_doubt=True, incident_id=1,
                 action=IN_DOUBT_ACTION + " " + ISP_ACTION),
            _txn("T-FAULT", "tx-gw", now - timedelta(minutes=15), outcome="error",
                 cause="gateway", incident_id=1),
            _txn("T-FAULT", "tx-ok", now - timedelta(minutes=20), outcome="approved",
                 cause=None),
            _txn("T-FAULT", "tx-old", now - timedelta(days=2), outcome="error", cause="dns"),
            _txn("T-HOST", "tx-new", now - timedelta(minutes=1), outcome="error", cause=None),
            _txn("T-HOST", "tx-rev", now - timedelta(hours=3), outcome="timeout",
                 cause="host", in_doubt=True, resolution="reversed"),
        ],
    )  # fmt: skip
    incidents = [
        _incident(1, "payments", "isp", "store", now - timedelta(minutes=16), store_id="S-1",
                  title="Store S-1: internet connection down",
                  last_seen_at=iso(now - timedelta(minutes=5)),
                  terminals='["T-FAULT"]', failed_count=2, in_doubt_count=1),
        _incident(2, "health", "device", "device", now - timedelta(minutes=20), store_id="S-2",
                  terminal_id="T-WARN", device="printer", title="Printer paper low on T-WARN",
                  terminals='["T-WARN"]'),
        _incident(3, "payments", "acquirer_outage", "acquirer", now - timedelta(days=1),
                  acquirer="ACQ-B", ended_at=iso(now - timedelta(hours=23)),
                  closed_at=iso(now - timedelta(hours=23)), title="Acquirer ACQ-B down",
                  terminals='["T-OK", "T-HOST"]', failed_count=7),
    ]  # fmt: skip
    for incident in incidents:
        names = ", ".join(incident)
        marks = ", ".join("?" for _ in incident)
        conn.execute(f"INSERT INTO incidents ({names}) VALUES ({marks})", tuple(incident.values()))
    conn.executemany(
        "INSERT INTO alert_outbox (incident_id, transition, channel, payload, created_at,"
        " next_attempt_at, delivered_at, gave_up_at) VALUES (?, ?, ?, '{}', ?, ?, ?, ?)",
        [
            (1, "opened", "webhook", iso(now), iso(now), None, None),
            (1, "opened", "email", iso(now), iso(now), None, iso(now)),
            (3, "closed", "webhook", iso(now), iso(now), iso(now), None),
        ],
    )


def wait_for_correlator(conn: sqlite3.Connection, deadline_s: float = 60.0) -> None:
    """Until the collector's correlator has read every stored event (so it does not
    derive anything from them after this). Polls the cursor it keeps in the database."""
    deadline = time.monotonic() + deadline_s
    while True:
        (newest,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()
        row = conn.execute(
            "SELECT last_rowid FROM correlator_cursor WHERE name = ?", (CURSOR_NAME,)
        ).fetchone()
        if row is not None and row[0] >= newest:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the correlator did not read up to event {newest}: {row}")
        time.sleep(0.05)


def seed_fleet(collector: CollectorProc) -> Fleet:
    """Register the fleet's terminals through the real ingest API, let the correlator read
    their events, then add the derived rows."""
    now = datetime.now(UTC)
    tokens = {}
    for terminal, store in TERMINALS.items():
        tokens[terminal] = create_token(collector.db_path, terminal=terminal, store=store)
        _register(collector.url, tokens[terminal], terminal, store, now)
    conn = sqlite3.connect(collector.db_path, timeout=30, isolation_level=None)
    try:
        wait_for_correlator(conn)
        conn.execute("BEGIN IMMEDIATE")
        _derive(conn, now)
        conn.execute("COMMIT")
    finally:
        conn.close()
    viewer = create_token(collector.db_path, viewer="central-it")
    return Fleet(collector.url, collector.db_path, viewer, tokens["T-OK"], now)
