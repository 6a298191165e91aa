"""The correlator keeps the current-state tables and the payments from the events it reads,
through a real collector: newest event time wins, late older events never overwrite."""

from __future__ import annotations

import json
from datetime import timedelta

from tests.collector.correlate.servicekit import (
    Terminal,
    change,
    device,
    host,
    now_s,
    txn,
    txn_row,
    wait_caught_up,
    window,
)
from tests.collector.wire import rows
from tests.helpers import CollectorProc


def _probe(db, terminal_id: str, key: str) -> dict:
    found = rows(
        db,
        "SELECT state, error, since, last_ts, last_window FROM probe_state"
        " WHERE terminal_id = ? AND probe_key = ?",
        (terminal_id, key),
    )
    assert found, key
    state, error, since, last_ts, last_window = found[0]
    return {"state": state, "error": error, "since": since, "last_ts": last_ts,
            "window": json.loads(last_window) if last_window else None}  # fmt: skip


def test_probe_state_follows_changes_and_windows(collector: CollectorProc) -> None:
    t = now_s() - timedelta(minutes=20)
    term = Terminal(collector, "T-1", "S-1")
    # a probe never heard to change takes its state from its windows
    term.post(window(t, "gateway", "192.168.1.1"), window(t + timedelta(minutes=1), "gateway",
              "192.168.1.1", fail=True, error="unreachable"))  # fmt: skip
    wait_caught_up(collector.db_path)
    gw = _probe(collector.db_path, "T-1", "icmp 192.168.1.1 gateway")
    assert gw["state"] == "fail" and gw["error"] == "unreachable"
    assert gw["window"]["loss_pct"] == 100.0 and gw["window"]["window_s"] == 60.0

    # once changes are heard, they tell the state; windows only refresh the figures
    t1 = t + timedelta(minutes=2)
    term.post(change(t1, "gateway", "192.168.1.1", "ok"), window(t1 + timedelta(minutes=1),
              "gateway", "192.168.1.1", fail=True))  # fmt: skip
    wait_caught_up(collector.db_path)
    gw = _probe(collector.db_path, "T-1", "icmp 192.168.1.1 gateway")
    assert gw["state"] == "ok" and gw["since"].startswith(t1.strftime("%Y-%m-%dT%H:%M:%S"))
    assert gw["window"]["loss_pct"] == 100.0  # the newest window's figures

    # a late, older change (uploaded from a backlog) does not overwrite the newer one
    term.post(change(t, "gateway", "192.168.1.1", "fail"))
    wait_caught_up(collector.db_path)
    assert _probe(collector.db_path, "T-1", "icmp 192.168.1.1 gateway")["state"] == "ok"


def test_device_host_clock_follow_the_newest_event_time(collector: CollectorProc) -> None:
    t = now_s() - timedelta(minutes=30)
    term = Terminal(collector, "T-2", "S-1")
    term.post(
        device(t + timedelta(minutes=5), "printer", "escpos_printer", "fault", "paper_end",
               reason="paper end"),
        host(t + timedelta(minutes=5), cpu=97.0),
        window(t + timedelta(minutes=5), "link", "pool.ntp.org", probe="ntp",
               extras={"clock_offset_ms": 2500.0}),
    )  # fmt: skip
    # older events arrive later (a backlog): they must not win
    term.post(
        device(t, "printer", "escpos_printer", "ok"),
        host(t, cpu=5.0),
        window(t, "link", "pool.ntp.org", probe="ntp", extras={"clock_offset_ms": 3.0}),
    )
    wait_caught_up(collector.db_path)
    (dev,) = rows(collector.db_path, "SELECT state, flags, reason, since, last_ts FROM device_state"
                  " WHERE terminal_id = 'T-2' AND device = 'printer'")  # fmt: skip
    assert dev[0] == "fault" and json.loads(dev[1]) == ["paper_end"] and dev[2] == "paper end"
    assert dev[3] == dev[4]  # since: the fault's own time
    (term_row,) = rows(collector.db_path, "SELECT host, clock_offset_ms, last_event_ts FROM"
                       " terminals WHERE terminal_id = 'T-2'")  # fmt: skip
    assert json.loads(term_row[0])["cpu_pct"] == 97.0
    assert term_row[1] == 2500.0
    assert term_row[2].startswith((t + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M"))

    # the device recovers: state and since move on
    term.post(device(t + timedelta(minutes=9), "printer", "escpos_printer", "ok"))
    wait_caught_up(collector.db_path)
    (dev,) = rows(collector.db_path, "SELECT state, since FROM device_state"
                  " WHERE terminal_id = 'T-2' AND device = 'printer'")  # fmt: skip
    assert dev[0] == "ok" and dev[1][11:16] == (t + timedelta(minutes=9)).strftime("%H:%M")


def test_timeout_then_late_approval_stays_failed_and_leaves_doubt(collector: CollectorProc) -> None:
    t = now_s() - timedelta(minutes=10)
    term = Terminal(collector, "T-3", "S-2")
    term.post(txn(t, "x1", "timeout"))
    wait_caught_up(collector.db_path)
    row = txn_row(collector.db_path, "T-3", "x1")
    assert (row["failed"], row["in_doubt"], row["outcome"]) == (1, 1, "timeout")
    assert row["cause"] is not None and row["attributed_at"] is not None
    assert row["action"].startswith("The customer may have been charged")

    term.post(txn(t + timedelta(seconds=20), "x1", "approved", late=True, in_doubt=False))
    wait_caught_up(collector.db_path)
    row = txn_row(collector.db_path, "T-3", "x1")
    assert (row["failed"], row["in_doubt"], row["late"], row["outcome"]) == (1, 0, 1, "approved")
    assert row["ts"][11:19] == t.strftime("%H:%M:%S")  # still the moment it failed
    assert not row["action"].startswith("The customer may have been charged")


def test_late_end_arriving_before_its_timeout(collector: CollectorProc) -> None:
    """Out of order: the late approval is stored first, the timeout after it."""
    t = now_s() - timedelta(minutes=10)
    term = Terminal(collector, "T-4", "S-2")
    timeout, late = term.number([
        txn(t, "x2", "timeout"),
        txn(t + timedelta(seconds=5), "x2", "approved", late=True, in_doubt=False),
    ])  # fmt: skip
    term.post_numbered([late])
    term.post_numbered([timeout])
    wait_caught_up(collector.db_path)
    row = txn_row(collector.db_path, "T-4", "x2")
    assert (row["failed"], row["in_doubt"], row["outcome"]) == (1, 0, "approved")
    assert row["cause"] is not None


def test_approved_and_plain_declines_need_no_cause(collector: CollectorProc) -> None:
    t = now_s() - timedelta(minutes=5)
    term = Terminal(collector, "T-5", "S-3")
    term.post(
        txn(t, "ok1", "approved", in_doubt=False),
        txn(t, "d1", "declined", response_code="51", in_doubt=False),
        txn(t, "d2", "declined", response_code="91", in_doubt=False),
    )
    wait_caught_up(collector.db_path)
    found = dict(
        rows(collector.db_path, "SELECT txn_id, failed FROM txns WHERE terminal_id = 'T-5'")
    )
    assert found == {"ok1": 0, "d1": 0, "d2": 1}
    assert txn_row(collector.db_path, "T-5", "ok1")["cause"] is None
    assert txn_row(collector.db_path, "T-5", "d2")["cause"] is not None
