"""The query API's answers on a real collector holding the viewdata fleet.

The fleet (see tests/collector/viewdata.py): T-OK and T-FAULT in S-1, T-WARN and
T-HOST in S-2, T-OFF in S-3; payments on T-FAULT and T-HOST; incidents #1
(open, S-1), #2 (open, health, S-2), #3 (closed, acquirer ACQ-B).
"""

from __future__ import annotations

from datetime import timedelta

from collector.correlate.model import IN_DOUBT_ACTION
from protocol import Cause
from tests.collector.api.conftest import get, ok, walk
from tests.collector.viewdata import TERMINALS, Fleet, iso


def test_fleet_counts_terminals_payments_and_incidents(fleet: Fleet) -> None:
    body = ok(fleet.url, fleet.viewer, "fleet")
    assert body["terminals"] == {"total": 5, "ok": 1, "warning": 2, "fault": 1, "offline": 1}
    failed = body["failed_payments"]
    # 24 h: tx-isp (isp), tx-gw (gateway), tx-rev (host), tx-new (no cause yet);
    # tx-old is two days old
    assert failed["total"] == 4
    assert failed["unattributed"] == 1
    assert failed["by_cause"] == {
        **{c.value: 0 for c in Cause},
        "isp": 1,
        "gateway": 1,
        "host": 1,
    }
    assert failed["since"] < iso(fleet.now - timedelta(hours=23))
    assert body["in_doubt"] == 1  # tx-isp; tx-rev was resolved
    assert body["open_incidents"] == 2
    assert body["correlator"]["available"] in (True, False)


def test_fleet_lists_stores_worst_first(fleet: Fleet) -> None:
    stores = ok(fleet.url, fleet.viewer, "fleet")["stores"]
    assert [s["store_id"] for s in stores] == ["S-1", "S-3", "S-2"]
    s1, s3, s2 = stores
    assert s1 == {
        "store_id": "S-1", "terminals": 2, "ok": 1, "warning": 0, "fault": 1, "offline": 0,
        "failed_24h": 2, "in_doubt": 1, "open_incidents": 1,
    }  # fmt: skip
    assert (s3["offline"], s3["terminals"], s3["failed_24h"]) == (1, 1, 0)
    assert (s2["warning"], s2["failed_24h"], s2["open_incidents"]) == (2, 2, 1)
    only = ok(fleet.url, fleet.viewer, "fleet", stores=1)
    assert [s["store_id"] for s in only["stores"]] == ["S-1"]
    assert only["stores_total"] == 3


def test_terminals_list_state_and_counts(fleet: Fleet) -> None:
    items = ok(fleet.url, fleet.viewer, "terminals")["items"]
    assert [t["terminal_id"] for t in items] == sorted(TERMINALS)
    by_id = {t["terminal_id"]: t for t in items}
    assert {t: by_id[t]["state"] for t in by_id} == {
        "T-OK": "ok", "T-FAULT": "fault", "T-WARN": "warning", "T-HOST": "warning",
        "T-OFF": "offline",
    }  # fmt: skip
    assert (by_id["T-FAULT"]["failed_24h"], by_id["T-FAULT"]["in_doubt"]) == (2, 1)
    assert (by_id["T-HOST"]["failed_24h"], by_id["T-HOST"]["in_doubt"]) == (2, 0)
    assert by_id["T-OK"]["store_id"] == "S-1"
    assert by_id["T-OK"]["agent_version"] == "0.1.0"


def test_terminals_filters(fleet: Fleet) -> None:
    def ids(**params: str) -> list[str]:
        return [
            t["terminal_id"] for t in ok(fleet.url, fleet.viewer, "terminals", **params)["items"]
        ]

    assert ids(store="S-2") == ["T-HOST", "T-WARN"]
    assert ids(state="warning") == ["T-HOST", "T-WARN"]
    assert ids(state="offline") == ["T-OFF"]
    assert ids(store="S-1", state="fault") == ["T-FAULT"]
    assert ids(store="S-404") == []


def test_terminals_pages_walk_every_terminal_once(fleet: Fleet) -> None:
    pages = walk(fleet.url, fleet.viewer, "terminals", limit=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [t["terminal_id"] for p in pages for t in p] == sorted(TERMINALS)
    warned = walk(fleet.url, fleet.viewer, "terminals", limit=1, state="warning")
    assert [t["terminal_id"] for p in warned for t in p] == ["T-HOST", "T-WARN"]


def test_terminal_view(fleet: Fleet) -> None:
    body = ok(fleet.url, fleet.viewer, "terminals/T-FAULT")
    assert (body["terminal_id"], body["store_id"], body["agent_id"]) == (
        "T-FAULT", "S-1", "agent-T-FAULT",
    )  # fmt: skip
    assert body["state"] == "fault"
    assert (body["spool_backlog"], body["clock_offset_ms"]) == (5, 12.5)
    assert body["host"]["cpu_pct"] == 12.0
    probes = {p["role"]: p for p in body["probes"]}
    assert probes["gateway"]["state"] == "fail"
    assert probes["gateway"]["error"] == "timeout"
    assert probes["gateway"]["loss_pct"] == 100.0
    assert probes["acquirer"]["acquirer"] == "ACQ-A"
    assert probes["acquirer"]["rtt_avg_ms"] == 21.5
    devices = {d["device"]: d for d in body["devices"]}
    assert devices["printer"]["flags"] == ["paper_near_end"]
    assert devices["pinpad"]["state"] == "ok"
    # newest first, failed only (tx-ok was approved), older than 24 h too
    assert [t["txn_id"] for t in body["recent_failures"]] == ["tx-isp", "tx-gw", "tx-old"]
    isp = body["recent_failures"][0]
    assert (isp["cause"], isp["in_doubt"], isp["confidence"]) == ("isp", True, 0.9)
    assert isp["action"].startswith(IN_DOUBT_ACTION)
    assert isp["evidence"][0]["event_id"] == "agent-T-FAULT:2"
    assert body["in_doubt"] == 1
    assert [i["id"] for i in body["open_incidents"]] == [1]


def test_terminal_view_of_a_quiet_terminal(fleet: Fleet) -> None:
    body = ok(fleet.url, fleet.viewer, "terminals/T-OFF")
    assert body["state"] == "offline"
    assert (body["host"], body["probes"], body["devices"]) == (None, [], [])
    assert (body["recent_failures"], body["in_doubt"], body["open_incidents"]) == ([], 0, [])
    warn = ok(fleet.url, fleet.viewer, "terminals/T-WARN")
    assert [i["id"] for i in warn["open_incidents"]] == [2]  # its printer's health incident


def test_unknown_terminal_is_404(fleet: Fleet) -> None:
    for path in ("terminals/T-NOPE", "terminals/T-NOPE/timeline"):
        reply = get(fleet.url, fleet.viewer, path)
        assert reply.status == 404, path
        assert "T-NOPE" in reply.json()["error"]


def test_incidents_list_and_filters(fleet: Fleet) -> None:
    def ids(**params: str) -> list[int]:
        return [i["id"] for i in ok(fleet.url, fleet.viewer, "incidents", **params)["items"]]

    assert ids() == [1, 2, 3]  # newest start first
    assert ids(state="open") == [1, 2]
    assert ids(state="closed") == [3]
    assert ids(kind="health") == [2]
    assert ids(cause="acquirer_outage") == [3]
    assert ids(acquirer="ACQ-B") == [3]
    # S-1: #1 is its own; #3 hit T-OK, a terminal of S-1
    assert ids(store="S-1") == [1, 3]
    # overlapping the last hour: the two open ones; #3 ended 23 h ago
    assert ids(since=iso(fleet.now - timedelta(hours=1))) == [1, 2]
    assert ids(until=iso(fleet.now - timedelta(hours=2))) == [3]
    pages = walk(fleet.url, fleet.viewer, "incidents", limit=1)
    assert [i["id"] for p in pages for i in p] == [1, 2, 3]


def test_one_incident(fleet: Fleet) -> None:
    body = ok(fleet.url, fleet.viewer, "incidents/1")
    assert body["state"] == "open"
    assert (body["kind"], body["cause"], body["scope"]) == ("payments", "isp", "store")
    assert (body["terminals"], body["failed_count"], body["in_doubt_count"]) == (["T-FAULT"], 2, 1)
    assert body["title"] == "Store S-1: internet connection down"
    closed = ok(fleet.url, fleet.viewer, "incidents/3")
    assert closed["state"] == "closed"
    assert closed["ended_at"] is not None
    assert get(fleet.url, fleet.viewer, "incidents/999").status == 404
    assert get(fleet.url, fleet.viewer, "incidents/99999999999999999999").status in (400, 404)


def test_transactions_filters(fleet: Fleet) -> None:
    def ids(**params: str) -> list[str]:
        items = ok(fleet.url, fleet.viewer, "transactions", **params)["items"]
        return [t["txn_id"] for t in items]

    everything = ["tx-new", "tx-isp", "tx-gw", "tx-ok", "tx-rev", "tx-old"]
    assert ids() == everything  # newest first
    assert ids(terminal="T-HOST") == ["tx-new", "tx-rev"]
    assert ids(store="S-1") == ["tx-isp", "tx-gw", "tx-ok", "tx-old"]
    assert ids(acquirer="ACQ-A") == everything
    assert ids(acquirer="ACQ-Z") == []
    assert ids(outcome="timeout") == ["tx-isp", "tx-rev"]
    assert ids(cause="gateway") == ["tx-gw"]
    assert ids(cause="power") == []
    assert ids(in_doubt="true") == ["tx-isp"]  # tx-rev is resolved
    assert ids(in_doubt="false") == [t for t in everything if t != "tx-isp"]
    assert ids(failed="false") == ["tx-ok"]
    assert ids(failed="true", store="S-2") == ["tx-new", "tx-rev"]
    assert ids(since=iso(fleet.now - timedelta(hours=1))) == ["tx-new", "tx-isp", "tx-gw", "tx-ok"]
    assert ids(until=iso(fleet.now - timedelta(hours=1))) == ["tx-rev", "tx-old"]


def test_transaction_item_carries_cause_and_evidence(fleet: Fleet) -> None:
    (isp,) = ok(fleet.url, fleet.viewer, "transactions", cause="isp")["items"]
    assert isp["terminal_id"] == "T-FAULT"
    assert isp["store_id"] == "S-1"
    assert (isp["outcome"], isp["in_doubt"], isp["failed"]) == ("timeout", True, True)
    assert (isp["amount_minor"], isp["currency"], isp["acquirer"]) == (1250, "EUR", "ACQ-A")
    assert isp["incident_id"] == 1
    assert isp["evidence"] == [
        {
            "event_id": "agent-T-FAULT:2",
            "kind": "probe_change",
            "ts": isp["evidence"][0]["ts"],
            "terminal_id": "T-FAULT",
            "what": "gateway probe 192.168.1.1 failing (timeout)",
        }
    ]
    (new,) = ok(fleet.url, fleet.viewer, "transactions", terminal="T-HOST", outcome="error")[
        "items"
    ]
    assert (new["cause"], new["evidence"], new["technical"]) == (None, [], True)
