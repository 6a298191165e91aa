"""Feeding a real collector with a terminal's events, and waiting for its correlator.

Events are built with protocol types (``seq`` 0) and numbered when posted, so
a test writes what happened at the till and on the network, and when::

    term = Terminal(collector, "T-1", "S-1")
    term.post(isp_window(t, fail=True), txn(t, "x1", "timeout"))
    wait_caught_up(collector.db_path)
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import protocol
from protocol import (
    AgentInfo,
    DeviceStatus,
    Event,
    HostSample,
    ProbeChange,
    ProbeWindow,
    Report,
    Txn,
)
from tests.collector.wire import post_report, rows
from tests.helpers import CollectorProc, create_token

CATCH_UP_TIMEOUT_S = 60.0


def now_s() -> datetime:
    """Now, to the second: event times near the collector's clock (inside the horizon)."""
    return datetime.now(UTC).replace(microsecond=0)


class Terminal:
    """One simulated agent posting to a collector with its own agent token."""

    def __init__(
        self,
        collector: CollectorProc,
        terminal_id: str,
        store_id: str,
        *,
        agent_id: str | None = None,
        db_path: Path | None = None,
    ) -> None:
        self.collector = collector
        self.terminal_id = terminal_id
        self.store_id = store_id
        self.agent = AgentInfo(
            id=agent_id or f"agent-{terminal_id}",
            terminal_id=terminal_id,
            store_id=store_id,
            version="0.1.0",
        )
        self.token = create_token(
            db_path or collector.db_path, terminal=terminal_id, store=store_id
        )
        self.seq = 0

    def number(self, events: Iterable[Event]) -> list[Event]:
        out = []
        for ev in events:
            self.seq += 1
            out.append(dataclasses.replace(ev, seq=self.seq))
        return out

    def post(self, *events: Event, url: str | None = None) -> None:
        """Number ``events`` (the next seqs of this agent) and post them as one report."""
        self.post_numbered(self.number(events), url=url)

    def post_numbered(self, events: Iterable[Event], *, url: str | None = None) -> None:
        """Post events that already carry their seqs (to send them out of order)."""
        report = Report(agent=self.agent, sent_at=datetime.now(UTC), events=tuple(events))
        reply = post_report(url or self.collector.url, protocol.encode_report(report), self.token)
        assert reply.status == 200, reply.body


def wait_caught_up(db_path: Path, timeout: float = CATCH_UP_TIMEOUT_S) -> int:
    """Wait until the correlator's cursor reached the last stored event; returns that rowid."""
    deadline = time.monotonic() + timeout
    while True:
        last = rows(db_path, "SELECT coalesce(max(rowid), 0) FROM events")[0][0]
        cursor = rows(db_path, "SELECT coalesce(max(last_rowid), 0) FROM correlator_cursor")
        if cursor[0][0] >= last:
            return int(last)
        if time.monotonic() > deadline:
            raise AssertionError(f"correlator did not catch up: cursor {cursor} of {last} events")
        time.sleep(0.05)


def wait_for(
    db_path: Path, sql: str, params: tuple[Any, ...] = (), timeout: float = 30.0
) -> list[tuple[Any, ...]]:
    """Poll a query until it returns rows (for what the timer does, like closing incidents)."""
    deadline = time.monotonic() + timeout
    while True:
        found = rows(db_path, sql, params)
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing for {sql!r} {params!r}")
        time.sleep(0.1)


def txn_row(db_path: Path, terminal_id: str, txn_id: str) -> dict[str, Any]:
    names = (
        "outcome, in_doubt, late, resolution, failed, ts, cause, local_cause, confidence,"
        " evidence, action, attributed_at, incident_id"
    )
    found = rows(
        db_path,
        f"SELECT {names} FROM txns WHERE terminal_id = ? AND txn_id = ?",
        (terminal_id, txn_id),
    )
    assert found, f"no txns row for {terminal_id}/{txn_id}"
    out = dict(zip([n.strip() for n in names.split(",")], found[0], strict=True))
    out["evidence"] = json.loads(out["evidence"]) if out["evidence"] else None
    return out


def incidents(
    db_path: Path, where: str = "1", params: tuple[Any, ...] = ()
) -> list[dict[str, Any]]:
    from collector.correlate.incidents import INCIDENT_COLUMNS, incident_json

    found = rows(
        db_path, f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE {where} ORDER BY id", params
    )
    return [incident_json(r) for r in found]


# --- events ---------------------------------------------------------------------------------


def window(
    ts: datetime,
    role: str,
    target: str,
    *,
    fail: bool = False,
    probe: str = "icmp",
    acquirer: str | None = None,
    error: str = "timeout",
    extras: dict[str, Any] | None = None,
) -> ProbeWindow:
    return ProbeWindow(
        seq=0, ts=ts, probe=probe, target=target, role=role, acquirer=acquirer, window_s=60.0,
        sent=10, ok=0 if fail else 10, loss_pct=100.0 if fail else 0.0,
        rtt_avg_ms=None if fail else 12.0, errors={error: 10} if fail else {},
        extras=extras or {},
    )  # fmt: skip


def change(
    ts: datetime, role: str, target: str, state: str, *, probe: str = "icmp",
    acquirer: str | None = None, error: str | None = "timeout",
) -> ProbeChange:  # fmt: skip
    return ProbeChange(
        seq=0, ts=ts, probe=probe, target=target, role=role, acquirer=acquirer, state=state,
        error=error if state == "fail" else None,
    )  # fmt: skip


def device(
    ts: datetime, name: str, kind: str, state: str, *flags: str, reason: str | None = None
) -> DeviceStatus:
    return DeviceStatus(
        seq=0, ts=ts, device=name, device_kind=kind, state=state, flags=flags, reason=reason
    )


def host(ts: datetime, *, cpu: float = 10.0, boot: datetime | None = None) -> HostSample:
    return HostSample(
        seq=0, ts=ts, cpu_pct=cpu, mem_pct=40.0, mem_available_bytes=2**30, disk_pct=50.0,
        disk_free_bytes=2**34, load1=0.5, load5=0.5, load15=0.5, uptime_s=86400.0,
        boot_time=boot or ts - timedelta(days=1),
    )  # fmt: skip


def txn(
    ts: datetime,
    txn_id: str,
    outcome: str,
    *,
    acquirer: str = "ACQ",
    started: datetime | None = None,
    **fields: Any,
) -> Txn:
    in_doubt = fields.pop("in_doubt", outcome == "timeout")
    return Txn(
        seq=0, ts=ts, txn_id=txn_id, acquirer=acquirer, outcome=outcome,
        started_at=started or ts - timedelta(seconds=30), in_doubt=in_doubt, **fields,
    )  # fmt: skip


def healthy_store(ts: datetime, *, acquirer: str = "ACQ") -> list[Event]:
    """One minute of a healthy network: link, gateway, ISP anchor, DNS and the acquirer."""
    return [
        window(ts, "link", "eth0", probe="link"),
        window(ts, "gateway", "192.168.1.1"),
        window(ts, "isp", "9.9.9.9"),
        window(ts, "dns", "resolver", probe="dns"),
        window(ts, "acquirer", "acq.example:443", probe="tcp", acquirer=acquirer),
    ]
