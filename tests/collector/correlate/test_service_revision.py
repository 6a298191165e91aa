"""Late evidence revises a payment's cause within the horizon; the cursor survives a SIGKILL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from tests.collector.correlate.servicekit import (
    Terminal,
    healthy_store,
    incidents,
    now_s,
    txn,
    txn_row,
    wait_caught_up,
    window,
)
from tests.collector.wire import rows
from tests.helpers import CollectorProc, start_collector

MIN = timedelta(minutes=1)


def test_a_store_uploading_its_backlog_later_revises_the_cause(collector: CollectorProc) -> None:
    db = collector.db_path
    t = now_s() - timedelta(minutes=30)
    till = Terminal(collector, "T-1", "S-1")  # no network probes of its own
    router_side = Terminal(collector, "T-2", "S-1")  # probes the ISP; offline meanwhile
    till.post(txn(t + 3 * MIN, "x1", "timeout"))
    wait_caught_up(db)
    first = txn_row(db, "T-1", "x1")
    assert first["cause"] == "unknown" and first["confidence"] == 0.0
    assert first["incident_id"] is None  # unknown opens no incident

    # the other terminal comes back and uploads what it saw: the ISP was down meanwhile
    backlog = []
    for i in range(7):
        minute = healthy_store(t + i * MIN)
        minute[2] = window(t + i * MIN, "isp", "9.9.9.9", fail=2 <= i <= 4)
        backlog += minute
    router_side.post(*backlog)
    wait_caught_up(db)
    revised = txn_row(db, "T-1", "x1")
    assert revised["cause"] == "isp" and revised["local_cause"] == "isp"
    assert revised["attributed_at"] > first["attributed_at"]
    assert revised["evidence"] and all(e["terminal_id"] == "T-2" for e in revised["evidence"])
    agent = router_side.agent.id
    stored = {f"{agent}:{seq}" for (seq,) in rows(db, "SELECT seq FROM events WHERE agent_id = ?",
                                                   (agent,))}  # fmt: skip
    assert {e["event_id"] for e in revised["evidence"]} <= stored
    (incident,) = incidents(db)
    assert incident["cause"] == "isp" and revised["incident_id"] == incident["id"]


def test_evidence_past_the_horizon_does_not_revise(tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text("[attribution]\nrevise_horizon_s = 600\nfleet_window_s = 60\n")
    proc = start_collector(tmp_path / "collector.db", ["--config", str(config)])
    try:
        t = now_s() - timedelta(minutes=30)  # older than the 10-minute horizon
        term = Terminal(proc, "T-1", "S-1")
        term.post(txn(t, "old", "timeout"))
        wait_caught_up(proc.db_path)
        assert txn_row(proc.db_path, "T-1", "old")["cause"] == "unknown"  # new: attributed
        term.post(*[window(t + k * MIN, "isp", "9.9.9.9", fail=True) for k in (-1, 0, 1)])
        wait_caught_up(proc.db_path)
        assert txn_row(proc.db_path, "T-1", "old")["cause"] == "unknown"  # too old to revise
    finally:
        proc.stop()


def test_no_event_lost_or_counted_twice_across_a_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    proc = start_collector(db)
    t = now_s() - timedelta(minutes=50)
    terms = [Terminal(proc, f"T-{n}", f"S-{n % 2}") for n in range(3)]
    failed: set[tuple[str, str]] = set()

    def minute(i: int, url: str | None = None) -> None:
        for term in terms:
            events = healthy_store(t + i * MIN)
            events[3] = window(t + i * MIN, "dns", "resolver", probe="dns", fail=i % 7 < 3,
                               error="servfail")  # fmt: skip
            txn_id = f"m{i}"
            outcome = "timeout" if i % 3 == 0 else "approved"
            events.append(txn(t + i * MIN - timedelta(seconds=5), txn_id, outcome))
            if outcome == "timeout":
                failed.add((term.terminal_id, txn_id))
            term.post(*events, url=url)

    try:
        for i in range(15):
            minute(i)
    finally:
        proc.kill()  # wherever the correlator was, mid-pass or not
    proc = start_collector(db)
    try:
        for i in range(15, 30):
            minute(i, url=proc.url)
        last = wait_caught_up(db)
        assert rows(db, "SELECT last_rowid FROM correlator_cursor")[0][0] == last
        assert rows(db, "SELECT count(*) FROM txns")[0][0] == 3 * 30
        got = set(rows(db, "SELECT terminal_id, txn_id FROM txns WHERE failed = 1"))
        assert got == failed
        assert rows(db, "SELECT count(*) FROM txns WHERE failed = 1 AND cause IS NULL")[0][0] == 0
        # incident counts equal their members: nothing counted twice
        for incident in incidents(db, "kind = 'payments'"):
            (members,) = rows(db, "SELECT count(*) FROM txns WHERE incident_id = ?",
                              (incident["id"],))[0]  # fmt: skip
            assert incident["failed_count"] == members
        placed = rows(db, "SELECT count(*) FROM txns WHERE incident_id IS NOT NULL")[0][0]
        assert placed == sum(i["failed_count"] for i in incidents(db, "kind = 'payments'"))
        assert placed > 0
        # the probe states reflect the newest minute
        states = rows(db, "SELECT DISTINCT state FROM probe_state WHERE role = 'dns'")
        assert states == [("ok" if 29 % 7 >= 3 else "fail",)]
    finally:
        proc.stop()
