"""Scenario files and fault placement: what is accepted, and errors that name the key."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.fleetsim.plan import plan_faults
from collector.fleetsim.scenario import (
    FAULT_KINDS,
    SCENARIO_DIR,
    ScenarioError,
    find_scenario,
    load_scenario,
    parse_scenario,
)

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _parse(text: str) -> object:
    return parse_scenario(tomllib.loads(text), "s.toml")


def test_every_shipped_scenario_loads_and_mixed_has_every_fault_kind() -> None:
    files = sorted(SCENARIO_DIR.glob("*.toml"))
    assert files
    for path in files:
        scenario = load_scenario(path)
        plan_faults(scenario, start=START, seed=1)  # every fault can be placed
    mixed = load_scenario(find_scenario("mixed"))
    assert {f.kind for f in mixed.faults} == set(FAULT_KINDS)
    outage = next(f for f in mixed.faults if f.kind == "acquirer_outage")
    plan = plan_faults(mixed, start=START, seed=1)
    placed = next(f for f in plan.faults if f.spec is outage)
    assert len(placed.stores) >= 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('duration = "1h"\nstorez = 3', "s.toml: storez: unknown key; did you mean 'stores'?"),
        ("stores = 3", "s.toml: duration: missing"),
        ('duration = "1 hour"', "s.toml: duration: '1 hour' is not a duration"),
        ('duration = "1h"\nacquirers = []', "s.toml: acquirers: expected a list"),
        (
            'duration = "1h"\n[[fault]]\nkind = "isp_dwn"\nat = "5m"\nduration = "5m"',
            "s.toml: fault[0].kind: 'isp_dwn' is not one of",
        ),
        (
            'duration = "1h"\n[[fault]]\nkind = "isp_down"\nduration = "5m"',
            "s.toml: fault[0].at: missing",
        ),
        (
            'duration = "1h"\n[[fault]]\nkind = "acquirer_outage"\nat = "5m"\nduration = "5m"',
            "s.toml: fault[0].acquirer: missing (acquirer_outage needs an acquirer)",
        ),
        (
            'duration = "1h"\n[[fault]]\nkind = "acquirer_path"\nacquirer = "nope"\n'
            'at = "5m"\nduration = "5m"',
            "s.toml: fault[0].acquirer: 'nope' is not one of the scenario's acquirers",
        ),
        (
            'duration = "1h"\n[[fault]]\nkind = "isp_down"\nacquirer = "acquirer-a"\n'
            'at = "5m"\nduration = "5m"',
            "s.toml: fault[0].acquirer: not used by isp_down",
        ),
        (
            'duration = "1h"\n[[fault]]\nkind = "isp_down"\nat = "50m"\nduration = "20m"',
            "s.toml: fault[0].duration: the fault ends after the scenario",
        ),
        (
            'duration = "1h"\n[[fault]]\nkind = "power_cut"\nat = "5m"\nduration = "5m"\n'
            'ups_runtime = "6m"',
            "s.toml: fault[0].ups_runtime: must be shorter than the fault's duration",
        ),
        (
            'duration = "1h"\n[[fault]]\nkind = "isp_down"\nat = "5m"\nduration = "5m"\nstores = 0',
            "s.toml: fault[0].stores: 0 is out of range",
        ),
    ],
)
def test_a_bad_scenario_is_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        _parse(text)
    assert str(caught.value).startswith(message)


def test_durations_in_every_form() -> None:
    scenario = parse_scenario(
        {"duration": "1h30m", "fault": [{"kind": "isp_down", "at": 600, "duration": "90s"}]}
    )
    assert scenario.duration_s == 5400
    assert (scenario.faults[0].at_s, scenario.faults[0].duration_s) == (600, 90)


def test_a_file_that_is_not_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("duration = \n")
    with pytest.raises(ScenarioError, match=r"broken.toml: not valid TOML"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match=r"missing.toml: cannot read"):
        load_scenario(tmp_path / "missing.toml")


def test_faults_on_one_store_must_be_apart() -> None:
    scenario = _parse(
        'duration = "2h"\nstores = 4\n'
        '[[fault]]\nkind = "isp_down"\nstores = ["S002"]\nat = "10m"\nduration = "10m"\n'
        '[[fault]]\nkind = "dns_broken"\nstores = ["S002"]\nat = "25m"\nduration = "10m"\n'
    )
    with pytest.raises(ScenarioError) as caught:
        plan_faults(scenario, start=START, where="s.toml")  # type: ignore[arg-type]
    assert str(caught.value).startswith(
        "s.toml: fault[1].stores: S002 already has fault 'isp_down-0' within quiet_margin_s"
    )


def test_placement_errors_name_the_key() -> None:
    scenario = _parse(
        'duration = "2h"\nstores = 2\n'
        '[[fault]]\nkind = "isp_down"\nstores = 3\nat = "10m"\nduration = "10m"\n'
    )
    with pytest.raises(ScenarioError, match=r"fault\[0\]\.stores: 3 store\(s\) wanted"):
        plan_faults(scenario, start=START)  # type: ignore[arg-type]
    scenario = _parse(
        'duration = "2h"\n[[fault]]\nkind = "host_starved"\nstores = ["S099"]\n'
        'at = "10m"\nduration = "10m"\n'
    )
    with pytest.raises(ScenarioError, match=r"fault\[0\]\.stores: 'S099' is not a store"):
        plan_faults(scenario, start=START, stores=3)  # type: ignore[arg-type]


def test_placement_counts_seed_and_the_outage_default() -> None:
    scenario = _parse(
        'duration = "3h"\nstores = 8\nterminals = 3\n'
        '[[fault]]\nkind = "isp_down"\nstores = ["S001"]\nat = "30m"\nduration = "20m"\n'
        '[[fault]]\nkind = "pinpad_unplugged"\nstores = 2\nterminals = 2\n'
        'at = "10m"\nduration = "20m"\n'
        '[[fault]]\nkind = "acquirer_outage"\nacquirer = "acquirer-b"\n'
        'at = "40m"\nduration = "10m"\n'
    )
    plan = plan_faults(scenario, start=START, seed=5)  # type: ignore[arg-type]
    isp, pinpad, outage = plan.faults
    assert isp.stores == {"S001"} and isp.terminals == {"S001-T1", "S001-T2", "S001-T3"}
    assert len(pinpad.stores) == 2 and len(pinpad.terminals) == 4
    assert all(t.rsplit("-T", 1)[0] in pinpad.stores for t in pinpad.terminals)
    # every store free of other faults within the quiet margin: all but S001
    assert outage.stores == set(plan.stores) - {"S001"}
    assert plan_faults(scenario, start=START, seed=5) == plan  # type: ignore[arg-type]
    assert plan.faults_of("S001", "S001-T2") == (isp,)
