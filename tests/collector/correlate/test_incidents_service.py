"""Incidents open and close on event time, through a real collector and its correlator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.collector.correlate.servicekit import (
    Terminal,
    device,
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


@pytest.fixture
def alerting(tmp_path: Path) -> Iterator[CollectorProc]:
    """A collector with alerts configured (to a webhook nobody listens on: rows stay queued)."""
    config = tmp_path / "collector.toml"
    config.write_text(
        '[alerts]\nwebhook_url = "http://127.0.0.1:9/hook"\nretry_initial_s = 3600\n'
        "retry_max_s = 3600\n"
    )
    proc = start_collector(tmp_path / "collector.db", ["--config", str(config)])
    try:
        yield proc
    finally:
        proc.stop()


def _isp_store_minute(ts: datetime, down: bool) -> list:
    events = healthy_store(ts)
    events[2] = window(ts, "isp", "9.9.9.9", fail=down)
    events[4] = window(ts, "acquirer", "acq.example:443", probe="tcp", acquirer="ACQ", fail=down)
    return events


def _alerts(db: Path, incident_id: int) -> list[tuple[str, dict]]:
    found = rows(db, "SELECT transition, payload FROM alert_outbox WHERE incident_id = ?"
                 " ORDER BY id", (incident_id,))  # fmt: skip
    return [(transition, json.loads(payload)) for transition, payload in found]


def test_store_isp_outage_opens_one_incident_and_closes_on_event_time(
    alerting: CollectorProc,
) -> None:
    db = alerting.db_path
    t = now_s() - timedelta(minutes=40)
    term = Terminal(alerting, "T-1", "S-1")
    for i in range(8):  # ISP down from minute 2 to 5, two payments time out meanwhile
        ts = t + i * MIN
        events = _isp_store_minute(ts, down=2 <= i <= 5)
        if i in (3, 4):
            events.append(txn(ts - timedelta(seconds=10), f"x{i}", "timeout"))
        term.post(*events)
    wait_caught_up(db)
    (incident,) = incidents(db)
    assert (incident["kind"], incident["cause"], incident["scope"]) == ("payments", "isp", "store")
    assert incident["store_id"] == "S-1" and incident["terminals"] == ["T-1"]
    assert (incident["failed_count"], incident["in_doubt_count"]) == (2, 2)
    assert incident["state"] == "open"
    assert txn_row(db, "T-1", "x3")["incident_id"] == incident["id"]
    ((transition, payload),) = _alerts(db, incident["id"])
    assert transition == "opened" and payload["event"] == "incident_opened"
    assert payload["incident"]["failed_count"] >= 1  # the counts when it opened

    # healthy again; close_after_s (600 s) of event time later it closes
    for i in range(8, 14):
        term.post(*_isp_store_minute(t + i * MIN, down=False))
    wait_caught_up(db)
    assert incidents(db)[0]["state"] == "open"  # 8 minutes after the last failure
    for i in range(14, 18):
        term.post(*_isp_store_minute(t + i * MIN, down=False))
    wait_caught_up(db)
    (incident,) = incidents(db)
    assert incident["state"] == "closed" and incident["closed_at"] is not None
    last_failure = (t + 4 * MIN - timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%S")
    assert last_failure <= incident["ended_at"] <= (t + 17 * MIN).strftime("%Y-%m-%dT%H:%M:%S")
    assert [tr for tr, _ in _alerts(db, incident["id"])] == ["opened", "closed"]
    assert _alerts(db, incident["id"])[1][1]["incident"]["state"] == "closed"


def test_printer_paper_end_and_ups_on_battery_are_health_incidents(alerting: CollectorProc) -> None:
    db = alerting.db_path
    t = now_s() - timedelta(minutes=15)
    term = Terminal(alerting, "T-2", "S-2")
    term.post(
        device(t, "printer", "escpos_printer", "ok"),
        device(t, "ups", "megatec_ups", "ok"),
        device(t + MIN, "printer", "escpos_printer", "fault", "paper_end", reason="paper end"),
        device(t + 2 * MIN, "ups", "megatec_ups", "warning", "on_battery", reason="on battery"),
    )
    wait_caught_up(db)
    found = {i["device"]: i for i in incidents(db)}
    assert set(found) == {"printer", "ups"}
    printer, ups = found["printer"], found["ups"]
    assert (printer["kind"], printer["cause"], printer["scope"]) == ("health", "device", "device")
    assert (ups["kind"], ups["cause"]) == ("health", "power")
    assert printer["terminal_id"] == "T-2" and printer["failed_count"] == 0
    assert printer["started_at"][11:16] == (t + MIN).strftime("%H:%M")
    assert "paper" in printer["title"] and "printer" in printer["action"].lower()
    assert all(i["state"] == "open" for i in found.values())
    assert [tr for tr, _ in _alerts(db, printer["id"])] == ["opened"]

    # a heartbeat of the same trouble changes nothing; paper back in closes it
    term.post(
        device(t + 3 * MIN, "printer", "escpos_printer", "fault", "paper_end"),
        device(t + 5 * MIN, "printer", "escpos_printer", "ok"),
    )
    wait_caught_up(db)
    found = {i["device"]: i for i in incidents(db)}
    assert len(incidents(db)) == 2
    assert found["printer"]["state"] == "closed" and found["ups"]["state"] == "open"
    assert found["printer"]["ended_at"][11:16] == (t + 5 * MIN).strftime("%H:%M")
    assert [tr for tr, _ in _alerts(db, printer["id"])] == ["opened", "closed"]


def test_acquirer_outage_across_three_stores_is_one_incident(collector: CollectorProc) -> None:
    db = collector.db_path
    t = now_s() - timedelta(minutes=40)
    stores = [Terminal(collector, f"T-{s}", f"S-{s}") for s in ("A", "B", "C")]
    for n, term in enumerate(stores):  # each store: its own network fine, the acquirer fails
        events = []
        for i in range(7):
            ts = t + i * MIN
            events += healthy_store(ts)[:4]
            events.append(window(ts, "acquirer", "acq.example:443", probe="tcp",
                                 acquirer="ACQ", fail=2 <= i <= 5))  # fmt: skip
        events += [txn(t + 3 * MIN + n * timedelta(seconds=7), f"p{n}-{k}", "timeout")
                   for k in range(2)]  # fmt: skip
        term.post(*events)
    wait_caught_up(db)
    # and the stores go on, healthy, well past the fleet window
    for i in range(7, 16):
        for term in stores:
            term.post(*healthy_store(t + i * MIN))
    wait_caught_up(db)
    payments = incidents(db, "kind = 'payments'")
    assert len(payments) == 1, payments
    (incident,) = payments
    assert (incident["cause"], incident["scope"], incident["acquirer"]) == (
        "acquirer_outage", "acquirer", "ACQ",
    )  # fmt: skip
    assert incident["terminals"] == ["T-A", "T-B", "T-C"] and incident["failed_count"] == 6
    causes = rows(db, "SELECT DISTINCT cause, local_cause FROM txns WHERE failed = 1")
    assert causes == [("acquirer_outage", "acquirer_path")]


def test_single_store_acquirer_path_opens_after_the_fleet_window(collector: CollectorProc) -> None:
    db = collector.db_path
    t = now_s() - timedelta(minutes=40)
    term = Terminal(collector, "T-S", "S-S")
    events = []
    for i in range(4):
        ts = t + i * MIN
        events += healthy_store(ts)[:4]
        events.append(window(ts, "acquirer", "acq.example:443", probe="tcp", acquirer="ACQ",
                             fail=i >= 1))  # fmt: skip
    events.append(txn(t + 2 * MIN, "only", "timeout"))
    term.post(*events)
    wait_caught_up(db)
    assert txn_row(db, "T-S", "only")["cause"] == "acquirer_path"
    assert incidents(db) == []  # the fleet rule may still hold: no store incident yet
    for i in range(4, 9):  # five more minutes of event time: past fleet_window_s
        term.post(*healthy_store(t + i * MIN))
    wait_caught_up(db)
    (incident,) = incidents(db)
    assert (incident["cause"], incident["scope"], incident["store_id"], incident["acquirer"]) == (
        "acquirer_path", "store", "S-S", "ACQ",
    )  # fmt: skip


def test_revision_moves_a_payment_and_an_emptied_incident_closes(
    alerting: CollectorProc,
) -> None:
    db = alerting.db_path
    t = now_s() - timedelta(minutes=30)
    term = Terminal(alerting, "T-R", "S-R")
    events = []
    for i in range(5):
        ts = t + i * MIN
        minute = healthy_store(ts)
        minute[1] = window(ts, "gateway", "192.168.1.1", fail=i >= 1)
        events += minute
    events.append(txn(t + 3 * MIN, "g1", "timeout"))
    term.post(*events)
    wait_caught_up(db)
    row = txn_row(db, "T-R", "g1")
    assert row["cause"] == "gateway"
    (gateway,) = incidents(db)
    assert gateway["cause"] == "gateway" and gateway["failed_count"] == 1

    # the UPS's backlog arrives: the store was on battery — power comes before the router
    term.post(device(t + 2 * MIN, "ups", "megatec_ups", "warning", "on_battery"))
    wait_caught_up(db)
    row = txn_row(db, "T-R", "g1")
    assert row["cause"] == "power"
    assert any(e["kind"] == "device_status" for e in row["evidence"])
    by_key = {(i["kind"], i["cause"]): i for i in incidents(db)}
    assert by_key[("payments", "gateway")]["state"] == "closed"
    assert by_key[("payments", "gateway")]["failed_count"] == 0
    power = by_key[("payments", "power")]
    assert power["state"] == "open" and power["failed_count"] == 1
    assert row["incident_id"] == power["id"]
    assert ("health", "power") in by_key  # the UPS on battery is a health incident too
    assert [tr for tr, _ in _alerts(db, gateway["id"])] == ["opened", "closed"]
