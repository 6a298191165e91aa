"""The simulator through a real collector: what it posts is accepted and matches the scenario.

One module-wide run of a small scenario (6 stores × 2 terminals, 100 minutes)
against a real ``posmon-collector serve`` on a SQLite file, driven in steps
with the Python API; the tests then read the collector's database.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from collector.fleetsim.agents import BOOT_S
from collector.fleetsim.generate import FleetSim
from collector.fleetsim.plan import Fault, Plan, plan_faults
from collector.fleetsim.post import create_tokens
from collector.fleetsim.scenario import load_scenario
from collector.fleetsim.truth import TruthRow
from protocol.causes import TECHNICAL_RESPONSE_CODES
from protocol.fields import format_datetime
from tests.collector.wire import rows
from tests.helpers import CollectorProc, start_collector

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SCENARIO = """\
duration = "100m"
stores = 6
terminals = 2
payments_per_hour = [30, 40]
background_failures_per_hour = 1.5
quiet_margin_s = 300

[[fault]]
kind = "isp_down"
stores = ["S001"]
at = "20m"
duration = "15m"

[[fault]]
kind = "power_cut"
stores = ["S002"]
at = "30m"
duration = "12m"
ups_runtime = "2m"

[[fault]]
kind = "pinpad_unplugged"
terminals = ["S003-T1"]
at = "15m"
duration = "15m"

[[fault]]
name = "big-outage"
kind = "acquirer_outage"
acquirer = "acquirer-a"
stores = ["S004", "S005", "S006"]
at = "60m"
duration = "15m"
"""


@dataclass
class Run:
    plan: Plan
    sim: FleetSim
    db: Path
    #: (store, ts) of every event stored when the simulation had reached isp_down + 10 min
    during_isp: list[tuple[str, str]]
    truth: list[TruthRow]

    def fault(self, kind: str) -> Fault:
        return next(f for f in self.plan.faults if f.kind == kind)

    def bodies(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in rows(self.db, sql, params)]


def iso(moment: datetime) -> str:
    return format_datetime(moment)  # as the collector stores times: comparable as text


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    directory = tmp_path_factory.mktemp("fleetsim")
    path = directory / "scenario.toml"
    path.write_text(SCENARIO)
    plan = plan_faults(load_scenario(path), start=START, seed=11)
    collector: CollectorProc = start_collector(directory / "collector.db")
    try:
        tokens, _ = asyncio.run(create_tokens(str(collector.db_path), plan.all_terminals()))
        with FleetSim(plan, url=collector.url, tokens=tokens, seed=11) as sim:
            isp = next(f for f in plan.faults if f.kind == "isp_down")
            sim.run_until(isp.start + timedelta(minutes=10))
            during = [
                (str(r[0]), str(r[1]))
                for r in rows(collector.db_path, "SELECT store_id, ts FROM events")
            ]
            sim.run()
        yield Run(plan, sim, collector.db_path, during, sim.truth())
    finally:
        collector.stop()


def test_every_report_is_accepted_once_and_seqs_strictly_increase(run: Run) -> None:
    counters = run.sim.counters
    assert counters.refused == {} and counters.retries == 0
    assert counters.duplicates == 0
    assert counters.stored == counters.events > 10_000
    stored = rows(run.db, "SELECT count(*) FROM events")[0][0]
    assert stored == counters.events
    for agent_id, low, high, n in rows(
        run.db, "SELECT agent_id, min(seq), max(seq), count(*) FROM events GROUP BY agent_id"
    ):
        assert (low, high) == (1, n), agent_id
    assert len(rows(run.db, "SELECT DISTINCT agent_id FROM events")) == 12
    kinds = {r[0] for r in rows(run.db, "SELECT DISTINCT kind FROM events")}
    assert kinds == {
        "probe_window", "probe_change", "device_status", "host_sample", "txn", "agent_event"
    }  # fmt: skip


def test_isp_down_store_uploads_nothing_during_the_fault_then_its_backlog(run: Run) -> None:
    isp = run.fault("isp_down")
    blocked_from = iso(isp.start + timedelta(minutes=1))
    assert not [ts for store, ts in run.during_isp if store == "S001" and ts >= blocked_from]
    others = [ts for store, ts in run.during_isp if store != "S001" and ts >= blocked_from]
    assert others, "the other stores kept uploading"
    # after the run the backlog is there, stored after the other stores' later events
    first_other_late = rows(
        run.db,
        "SELECT min(rowid) FROM events WHERE store_id != 'S001' AND ts >= ?",
        (iso(isp.start + timedelta(minutes=5)),),
    )[0][0]
    backlog = rows(
        run.db,
        "SELECT min(rowid), count(*) FROM events WHERE store_id = 'S001' AND ts >= ? AND ts < ?",
        (blocked_from, iso(isp.end)),
    )[0]
    assert backlog[1] > 100 and backlog[0] > first_other_late


def test_isp_down_symptoms_gateway_fine_the_rest_failing(run: Run) -> None:
    isp = run.fault("isp_down")
    inside = (iso(isp.start + timedelta(minutes=2)), iso(isp.end))
    windows = run.bodies(
        "SELECT body FROM events WHERE store_id = 'S001' AND kind = 'probe_window'"
        " AND ts >= ? AND ts < ?",
        inside,
    )
    by_role: dict[str, list[float]] = {}
    for w in windows:
        by_role.setdefault(w["role"], []).append(w["loss_pct"])
    assert set(by_role["gateway"]) == {0.0} and set(by_role["link"]) == {0.0}
    for role in ("isp", "dns", "acquirer", "collector"):
        assert set(by_role[role]) == {100.0}, role
    changes = run.bodies(
        "SELECT body FROM events WHERE store_id = 'S001' AND kind = 'probe_change'"
        " AND ts >= ? AND ts < ?",
        (iso(isp.start), iso(isp.end)),
    )
    failing = {(c["role"], c["target"]) for c in changes if c["state"] == "fail"}
    assert ("isp", "9.9.9.9") in failing and ("isp", "1.1.1.1") in failing
    assert not any(role in ("gateway", "link") for role, _ in failing)
    # each flip is dated at the first failed attempt: within one probe interval of the start
    first = min(c["ts"] for c in changes if c["state"] == "fail")
    assert iso(isp.start) <= first < iso(isp.start + timedelta(seconds=10))


def test_power_cut_leaves_a_gap_then_a_reboot(run: Run) -> None:
    cut = run.fault("power_cut")
    for terminal in ("S002-T1", "S002-T2"):
        dark = rows(
            run.db,
            "SELECT kind, body FROM events WHERE terminal_id = ? AND ts > ? AND ts < ?",
            (terminal, iso(cut.dark_start), iso(cut.end + timedelta(seconds=BOOT_S))),
        )
        # only the payment open at the cut, timed out at its deadline while dark
        assert [kind for kind, _ in dark] == ["txn"], terminal
        txn = json.loads(dark[0][1])
        assert txn["outcome"] == "timeout" and txn["in_doubt"] is True
        ups = run.bodies(
            "SELECT body FROM events WHERE terminal_id = ? AND kind = 'device_status'"
            " AND json_extract(body, '$.device') = 'ups' AND ts >= ? AND ts <= ?",
            (terminal, iso(cut.start), iso(cut.dark_start)),
        )
        assert [u["state"] for u in ups if not u["heartbeat"]] == ["warning", "fault"]
        assert "on_battery" in ups[0]["flags"]
        starts = rows(
            run.db,
            "SELECT seq, body FROM events WHERE terminal_id = ? AND kind = 'agent_event'"
            " ORDER BY seq",
            (terminal,),
        )
        assert len(starts) == 2
        restart = json.loads(starts[1][1])
        assert restart["event"] == "start" and restart["details"]["previous_stop"] == "unclean"
        txn_seq = rows(
            run.db,
            "SELECT seq FROM events WHERE terminal_id = ? AND kind = 'txn' AND ts > ? AND ts < ?",
            (terminal, iso(cut.dark_start), iso(cut.end)),
        )[0][0]
        assert txn_seq > starts[1][0]  # recorded after the agent started again
        host = run.bodies(
            "SELECT body FROM events WHERE terminal_id = ? AND kind = 'host_sample' AND ts > ?"
            " ORDER BY ts LIMIT 1",
            (terminal, iso(cut.end)),
        )[0]
        assert host["boot_time"] == iso(cut.end)
        assert host["uptime_s"] < 120


def test_acquirer_outage_fails_that_acquirer_only_in_the_stores_hit(run: Run) -> None:
    outage = run.fault("acquirer_outage")
    inside = (iso(outage.start + timedelta(minutes=2)), iso(outage.end))
    store_of = dict(rows(run.db, "SELECT DISTINCT agent_id, store_id FROM events"))
    hit = {"S004", "S005", "S006"}
    loss: dict[tuple[bool, str], list[float]] = {}
    for agent_id, body in rows(
        run.db,
        "SELECT agent_id, body FROM events WHERE kind = 'probe_window' AND ts >= ? AND ts < ?"
        " AND json_extract(body, '$.role') = 'acquirer'",
        inside,
    ):
        w = json.loads(body)
        loss.setdefault((store_of[agent_id] in hit, w["acquirer"]), []).append(w["loss_pct"])
    assert min(loss[(True, "acquirer-a")]) >= 50.0
    assert set(loss[(True, "acquirer-b")]) == {0.0}
    assert set(loss[(False, "acquirer-a")]) == {0.0}


def test_pinpad_unplugged_is_a_disconnected_device(run: Run) -> None:
    fault = run.fault("pinpad_unplugged")
    states = run.bodies(
        "SELECT body FROM events WHERE terminal_id = 'S003-T1' AND kind = 'device_status'"
        " AND json_extract(body, '$.device') = 'pinpad' ORDER BY seq"
    )
    changes = [(s["ts"], s["state"]) for s in states if not s["heartbeat"]]
    assert [state for _, state in changes] == ["ok", "disconnected", "ok"]
    assert iso(fault.start) <= changes[1][0] < iso(fault.start + timedelta(seconds=10))
    other = run.bodies(
        "SELECT body FROM events WHERE terminal_id = 'S003-T2' AND kind = 'device_status'"
        " AND json_extract(body, '$.device') = 'pinpad'"
    )
    assert {s["state"] for s in other} == {"ok"}


def _failed(txn: dict[str, Any]) -> bool:
    technical = txn["outcome"] in ("declined", "error") and txn.get("response_code") in (
        TECHNICAL_RESPONSE_CODES
    )
    return txn["outcome"] in ("timeout", "error") or technical


def test_truth_matches_the_stored_payments(run: Run) -> None:
    stored = {
        (terminal, json.loads(body)["txn_id"]): json.loads(body)
        for terminal, body in rows(
            run.db, "SELECT terminal_id, body FROM events WHERE kind = 'txn'"
        )
    }
    failed = {key for key, txn in stored.items() if _failed(txn)}
    truth = {row.key: row for row in run.truth}
    assert set(truth) == failed
    for key, row in truth.items():
        txn = stored[key]
        assert (row.outcome, row.in_doubt, row.ts) == (txn["outcome"], txn["in_doubt"], txn["ts"])
        if row.outcome == "timeout":
            deadline = datetime.fromisoformat(txn["started_at"]) + timedelta(seconds=60)
            assert txn["ts"] == iso(deadline)
    causes: dict[str, set[str]] = {}
    for row in run.truth:
        causes.setdefault(str(row.expected_cause), set()).add(row.store_id)
    assert causes["isp"] == {"S001"}
    assert causes["power"] == {"S002"}
    assert causes["device"] == {"S003"}
    assert causes["acquirer_outage"] == {"S004", "S005", "S006"}
    assert "unknown" in causes
    for row in run.truth:
        assert (row.fault is None) == (str(row.expected_cause) == "unknown")
    outage = [r for r in run.truth if r.fault == "big-outage"]
    assert {r.acquirer for r in outage} == {"acquirer-a"}
    assert any(r.response_code in ("91", "96") for r in outage)
