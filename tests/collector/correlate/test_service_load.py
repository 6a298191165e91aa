"""The correlator under load: it falls behind, ingest never waits for it, and it catches up
to the verdicts a slow feed gets.

One store, two terminals, twelve minutes of a failed payment every second or two, with an
ISP outage, a starved host, a path to the acquirer failing and a PIN pad unplugged, all
posted after the fact: a fast feed (big reports, back to back) against a slow one (small
reports, each decided before the next). Most evidence arrives after the payments it
explains, so the slow feed exercises every revision rule.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from collector.correlate.service import run_pass
from collector.settings import CollectorSettings
from collector.storage.sqlite_schema import migrate
from protocol import Event
from tests.collector.correlate.servicekit import Terminal, device, host, now_s, txn, window
from tests.collector.wire import rows
from tests.helpers import CollectorProc, start_collector

SECONDS = 720
WAIT_S = 120.0


def timeline(t0: datetime) -> dict[str, list[Event]]:
    """Each terminal's events in time order."""
    t1: list[Event] = []
    t2: list[Event] = []
    for s in range(SECONDS):
        at = t0 + timedelta(seconds=s)
        if s % 30 == 0:
            t1.append(window(at, "isp", "9.9.9.9", fail=120 <= s < 240))
            t1.append(
                window(at, "acquirer", "acq.example:443", probe="tcp", acquirer="ACQ",
                       fail=480 <= s < 600)
            )  # fmt: skip
        if s % 10 == 0:
            t1.append(host(at, cpu=99.0 if 330 <= s < 420 else 10.0))
        if s % 20 == 0:  # the PIN pad's status, repeated as a heartbeat
            state = "disconnected" if 620 <= s < 680 else "ok"
            t2.append(device(at, "pinpad", "ecr_pinpad", state))
        t1.append(txn(at, f"a{s}", "timeout"))
        if s % 2 == 0:
            t2.append(txn(at, f"b{s}", "error"))
    return {"T-1": t1, "T-2": t2}


def chunks(events: list[Event], size: int) -> Iterator[list[Event]]:
    for start in range(0, len(events), size):
        yield events[start : start + size]


def behind(db: Path) -> bool:
    """Events stored that the correlator has not read, or payments it has not decided."""
    last = rows(db, "SELECT coalesce(max(rowid), 0) FROM events")[0][0]
    cursor = rows(db, "SELECT coalesce(max(last_rowid), 0) FROM correlator_cursor")[0][0]
    return bool(cursor < last or rows(db, "SELECT count(*) FROM txn_pending")[0][0])


def wait_idle(db: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while behind(db):
        if time.monotonic() > deadline:
            raise AssertionError("the correlator did not catch up")
        time.sleep(0.05)


def feed(collector: CollectorProc, t0: datetime, size: int, *, settle: bool) -> list[bool]:
    """Post the timeline in reports of ``size`` events per terminal, alternating terminals;
    with ``settle`` wait after each report until the correlator decided everything. Returns,
    per report, whether the correlator was behind right after the report was acknowledged."""
    terminals = {tid: Terminal(collector, tid, "S-1") for tid in ("T-1", "T-2")}
    streams = {tid: list(chunks(evs, size)) for tid, evs in timeline(t0).items()}
    seen: list[bool] = []
    for i in range(max(len(s) for s in streams.values())):
        for tid, parts in streams.items():
            if i < len(parts):
                terminals[tid].post(*parts[i])  # asserts 200: acknowledged
                seen.append(behind(collector.db_path))
                if settle:
                    wait_idle(collector.db_path)
    wait_idle(collector.db_path)
    return seen


def verdicts(db: Path) -> dict[tuple[str, str], tuple[Any, Any]]:
    found = rows(db, "SELECT terminal_id, txn_id, cause, confidence FROM txns WHERE failed = 1")
    return {(t, x): (c, round(conf, 3) if conf is not None else None) for t, x, c, conf in found}


@pytest.fixture
def second_collector(tmp_path: Path) -> Iterator[CollectorProc]:
    proc = start_collector(tmp_path / "slow.db")
    try:
        yield proc
    finally:
        proc.stop()


def test_a_fast_feed_is_acknowledged_while_behind_and_ends_with_the_slow_feeds_verdicts(
    collector: CollectorProc, second_collector: CollectorProc
) -> None:
    t0 = now_s() - timedelta(minutes=30)
    seen = feed(collector, t0, 400, settle=False)
    assert any(seen), "the correlator was never behind: the load proves nothing"
    feed(second_collector, t0, 12, settle=True)

    fast, slow = verdicts(collector.db_path), verdicts(second_collector.db_path)
    assert len(fast) == SECONDS + SECONDS // 2
    assert fast == slow
    causes = {cause for cause, _ in fast.values()}
    assert {"isp", "host", "acquirer_path", "device", "unknown"} <= causes
    assert all(cause is not None for cause, _ in fast.values())


def _replay(source: Path, target: Path) -> sqlite3.Connection:
    """A new database holding ``source``'s tokens, terminals and events, nothing derived."""
    conn = sqlite3.connect(target, isolation_level=None)
    migrate(conn)
    conn.execute("ATTACH ? AS old", (str(source),))
    for table in ("tokens", "terminals", "events"):
        names = ", ".join(r[1] for r in conn.execute(f"PRAGMA old.table_info({table})"))
        order = " ORDER BY rowid" if table == "events" else ""  # the insertion order
        conn.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM old.{table}{order}")
    conn.execute(
        "UPDATE terminals SET host = NULL, host_ts = NULL, clock_offset_ms = NULL,"
        " clock_ts = NULL, last_event_ts = NULL"
    )
    conn.execute("DETACH old")
    return conn


def test_passes_with_no_time_to_spare_decide_one_payment_each_and_reach_the_same_verdicts(
    collector: CollectorProc, tmp_path: Path
) -> None:
    feed(collector, now_s() - timedelta(minutes=30), 2000, settle=False)
    expected = verdicts(collector.db_path)

    conn = _replay(collector.db_path, tmp_path / "replay.db")
    settings = CollectorSettings(db=str(tmp_path / "replay.db"))
    passes = []
    try:
        while not passes or passes[-1].pending or passes[-1].pending_payments:
            conn.execute("BEGIN IMMEDIATE")
            result = run_pass(conn, settings, datetime.now(UTC), limit=300, budget_s=0.0)
            conn.execute("COMMIT")
            passes.append(result)
            assert len(passes) <= 20 * len(expected), "no progress"
        assert passes[0].events == 300 and passes[0].attributed == 1
        assert passes[0].pending > 0 and passes[0].pending_payments > 0
        assert all(p.attributed == 1 for p in passes if p.pending_payments)
    finally:
        conn.close()
    assert verdicts(tmp_path / "replay.db") == expected
