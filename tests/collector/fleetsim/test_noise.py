"""The simulator's [noise] table and hold_uploads: parsed with errors naming the key, and the
symptoms they add to what the simulated agents record (no collector needed: the agents' outboxes
are read directly)."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from collector.fleetsim.agents import TerminalSim
from collector.fleetsim.plan import Plan, plan_faults
from collector.fleetsim.scenario import (
    SCENARIO_DIR,
    NoiseSpec,
    ScenarioError,
    load_scenario,
    parse_scenario,
)
from collector.fleetsim.truth import truth_rows
from protocol import DeviceStatus, HostSample, ProbeChange, ProbeWindow, Txn

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
NOISE = SCENARIO_DIR / "noisy.toml"


def scenario(text: str) -> Any:
    return parse_scenario(tomllib.loads(text), "test.toml")


def run_terminal(plan: Plan, terminal: str, seed: int = 5) -> tuple[TerminalSim, list[Any]]:
    store = terminal.rsplit("-T", 1)[0]
    sim = TerminalSim(plan, store, terminal, run_id="r1", seed=seed, version="t")
    sim.advance(plan.end + timedelta(minutes=2))
    sim.flush(plan.end.timestamp())
    reports = sim.take_reports()
    return sim, reports


def events(reports: list[Any]) -> list[Any]:
    seen: dict[int, Any] = {}
    for report in reports:
        for event in report.events:
            seen[event.seq] = event
    return [seen[k] for k in sorted(seen)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[noise]\nprobe_los_per_hour = 1", "noise.probe_los_per_hour: unknown key; did you mean"),
        ("[noise]\nprobe_loss_pct = [40, 10]", "noise.probe_loss_pct: [40, 10]: min is above max"),
        ("[noise]\nprobe_loss_pct = 20", "noise.probe_loss_pct: expected [min, max]"),
        ("[noise]\ncpu_spike_pct = 101", "noise.cpu_spike_pct: 101 is out of range"),
        ("[noise]\nvaried_declines = 1", "noise.varied_declines: expected true or false"),
        ("noise = 3", "noise: expected a [noise] table"),
        (
            '[[fault]]\nkind = "isp_down"\nat = "1m"\nduration = "2m"\nhold_uploads = "yes"',
            "fault[0].hold_uploads: expected true or false",
        ),
    ],
)
def test_bad_noise_keys_are_named(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=None) as err:
        scenario('duration = "1h"\n' + text)
    assert message in str(err.value)


def test_noise_is_off_by_default_and_the_shipped_noisy_scenario_turns_it_on() -> None:
    assert scenario('duration = "1h"').noise == NoiseSpec() and not NoiseSpec().on
    noisy = load_scenario(NOISE)
    assert noisy.noise.on and noisy.noise.probe_loss_pct == (10.0, 40.0)
    assert noisy.noise.paper_end_during_faults and noisy.noise.varied_declines


QUIET = """\
duration = "3h"
stores = 2
terminals = 2
payments_per_hour = [60, 60]
background_failures_per_hour = 0
"""


def test_noise_shows_in_a_healthy_store_and_explains_no_failure() -> None:
    base = scenario(QUIET)
    noisy = parse_scenario(
        {**tomllib.loads(QUIET), "noise": tomllib.loads(NOISE.read_text())["noise"]}
    )
    clean_plan = plan_faults(base, start=START, seed=2)
    noisy_plan = plan_faults(noisy, start=START, seed=2)
    _, clean_reports = run_terminal(clean_plan, "S001-T1")
    sim, noisy_reports = run_terminal(noisy_plan, "S001-T1")
    clean, noise = events(clean_reports), events(noisy_reports)

    # the same payments, none failed; declines with more codes
    def txns(evs: list[Any]) -> list[tuple[str, str, bool]]:
        failed = ("timeout", "error")
        return sorted(
            (e.txn_id, e.acquirer, e.outcome in failed) for e in evs if isinstance(e, Txn)
        )

    assert txns(noise) == txns(clean) and not any(f for _, _, f in txns(noise))
    codes = {e.response_code for e in noise if isinstance(e, Txn) and e.outcome == "declined"}
    assert codes - {"05", "51"}
    # lossy windows under the failing threshold, and no probe ever flips
    losses = [e.loss_pct for e in noise if isinstance(e, ProbeWindow)]
    assert any(0 < loss < 50 for loss in losses) and max(losses) < 50
    assert {e.loss_pct for e in clean if isinstance(e, ProbeWindow)} == {0.0}
    assert not [e for e in noise if isinstance(e, ProbeChange) and e.state == "fail"]
    # CPU spikes under the threshold; the NTP offset wanders within 200 ms (+ the base jitter)
    cpus = [e.cpu_pct for e in noise if isinstance(e, HostSample)]
    assert any(70 <= c < 95 for c in cpus) and max(cpus) < 95
    offsets = [
        float(e.extras["clock_offset_ms"]) for e in noise
        if isinstance(e, ProbeWindow) and e.probe == "ntp"
    ]  # fmt: skip
    assert max(abs(o) for o in offsets) > 50 and max(abs(o) for o in offsets) < 250
    # a printer out of paper now and then (fault), reports sometimes twice
    printer = [e for e in noise if isinstance(e, DeviceStatus) and e.device == "printer"]
    assert (sim.noise.paper_end != []) == any("paper_end" in e.flags for e in printer)
    assert len(noisy_reports) > len({id(r) for r in noisy_reports})  # posted twice


def test_paper_end_next_to_a_fault_hits_the_neighbour_not_the_faulty_terminal() -> None:
    text = QUIET + (
        '[noise]\npaper_end_during_faults = true\n\n[[fault]]\nkind = "pinpad_unplugged"\n'
        'terminals = ["S001-T1"]\nat = "30m"\nduration = "20m"\n'
    )
    plan = plan_faults(scenario(text), start=START, seed=2)
    fault = plan.faults[0]
    inside = (fault.start, fault.end)
    for terminal, expected in (("S001-T1", False), ("S001-T2", True), ("S002-T2", False)):
        _, reports = run_terminal(plan, terminal)
        paper = [
            e for e in events(reports)
            if isinstance(e, DeviceStatus) and e.device == "printer" and "paper_end" in e.flags
        ]  # fmt: skip
        assert bool(paper) == expected, terminal
        assert all(inside[0] <= e.ts < inside[1] for e in paper)


def test_hold_uploads_keeps_reports_back_while_the_collector_is_unreachable() -> None:
    text = QUIET + (
        '[[fault]]\nkind = "acquirer_outage"\nacquirer = "acquirer-a"\nstores = ["S001"]\n'
        'hold_uploads = true\nat = "30m"\nduration = "20m"\n'
    )
    plan = plan_faults(scenario(text), start=START, seed=2)
    fault = plan.faults[0]
    sim = TerminalSim(plan, "S001", "S001-T1", run_id="r1", seed=5, version="t")
    sim.advance(fault.start + timedelta(minutes=1))
    sim.take_reports()
    sim.advance(fault.end - timedelta(seconds=1))
    assert sim.take_reports() == [] and sim.spool  # held back
    sim.advance(fault.end + timedelta(minutes=1))
    backlog = events(sim.take_reports())
    collector = [
        e for e in backlog
        if isinstance(e, ProbeWindow) and e.role == "collector" and fault.start < e.ts < fault.end
    ]  # fmt: skip
    assert collector and min(e.loss_pct for e in collector[1:]) == 100.0
    isp = [e for e in backlog if isinstance(e, ProbeWindow) and e.role == "isp"]
    assert {e.loss_pct for e in isp} == {0.0}


def test_overlapping_outage_faults_of_one_acquirer_are_one_outage_in_the_truth() -> None:
    text = QUIET.replace("stores = 2", "stores = 4") + "".join(
        f'[[fault]]\nname = "{name}"\nkind = "acquirer_outage"\nacquirer = "acquirer-a"\n'
        f'stores = {stores}\nat = "{at}"\nduration = "20m"\n\n'
        for name, stores, at in (
            ("two", '["S001", "S002"]', "30m"),
            ("third", '["S003"]', "40m"),
            ("later", '["S004"]', "2h"),
        )
    )
    plan = plan_faults(scenario(text), start=START, seed=2)
    records = []
    for _store, terminal in plan.all_terminals():
        sim, _ = run_terminal(plan, terminal)
        records += sim.payments
    rows = truth_rows(records, fleet_min_stores=3)
    causes = {(r.fault, str(r.expected_cause)) for r in rows if r.fault}
    assert causes == {
        ("two", "acquirer_outage"), ("third", "acquirer_outage"), ("later", "acquirer_path")
    }  # fmt: skip
