"""Late evidence and ``posmon-collector reattribute`` over a simulated fleet's database.

acquirer-a goes down for three stores at once, but S003 cannot reach the
collector while it lasts (``hold_uploads``: a proxy in front of the collector
is down; its internet and probes work), so the collector first sees only two
stores failing — one short of ``fleet_min_stores`` — and calls their payments
``acquirer_path``. When S003's backlog arrives the fleet rule has its third
store: every payment of the outage, S001's and S002's included, is revised to
``acquirer_outage``. The module's tests run in order on one run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from protocol.fields import format_datetime
from tests.e2e.fleet import FleetRun, scenario_named, scenario_text, start_fleet, wrong
from tests.helpers import run_collector_cli

SCENARIO = """\
name = "late-third-store"
duration = "40m"
stores = 5
terminals = 2
payments_per_hour = [90, 120]
background_failures_per_hour = 0

[[fault]]
name = "outage-seen"
kind = "acquirer_outage"
acquirer = "acquirer-a"
stores = ["S001", "S002"]
at = "10m"
duration = "15m"

[[fault]]
name = "outage-held"
kind = "acquirer_outage"
acquirer = "acquirer-a"
stores = ["S003"]
hold_uploads = true
at = "10m"
duration = "15m"
"""
OUTAGE = ("outage-seen", "outage-held")


@pytest.fixture(scope="module")
def late(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    scenario = replace(scenario_text(SCENARIO), noise=scenario_named("noisy").noise)
    fleet = start_fleet(tmp_path_factory.mktemp("late"), scenario, seed=13)
    try:
        held = fleet.fault("outage-held")
        fleet.run_until(held.end - timedelta(seconds=30))
        before = {(i["terminal_id"], i["txn_id"]): i for i in fleet.failed()}
        fleet.finish()
        yield {"fleet": fleet, "before": before}
    finally:
        fleet.stop()


def _fleet(late: dict[str, object]) -> FleetRun:
    fleet = late["fleet"]
    assert isinstance(fleet, FleetRun)
    return fleet


def test_backlog_of_a_third_store_revises_the_outage(late: dict[str, object]) -> None:
    fleet = _fleet(late)
    before = late["before"]
    assert isinstance(before, dict)
    truth = fleet.truth()
    outage = [r for r in truth if r.fault in OUTAGE]
    assert {r.store_id for r in outage} == {"S001", "S002", "S003"}
    # before the backlog: S003 had told nothing; S001 and S002 were only two stores
    assert not [key for key in before if key[0].startswith("S003")]
    early = [before[r.key] for r in outage if r.key in before]
    assert len({i["store_id"] for i in early}) == 2 and len(early) >= 4
    assert {i["cause"] for i in early} == {"acquirer_path"}
    # after it: every payment of the outage is an acquirer outage, the early ones revised
    after = {(i["terminal_id"], i["txn_id"]): i for i in fleet.failed()}
    assert wrong(truth, {k: i["cause"] for k, i in after.items()}) == []
    for item in early:
        revised = after[(item["terminal_id"], item["txn_id"])]
        assert revised["cause"] == "acquirer_outage"
        assert revised["attributed_at"] > item["attributed_at"]
        peers = {e["terminal_id"].split("-T")[0] for e in revised["evidence"]}
        assert "S003" in peers  # the late store is part of the evidence
    incidents = fleet.incidents(cause="acquirer_outage")
    assert len(incidents) == 1 and incidents[0]["scope"] == "acquirer"
    assert {after[r.key]["incident_id"] for r in outage} == {incidents[0]["id"]}
    # the store incidents opened on the early verdicts hold no payment any more
    for path in fleet.incidents(cause="acquirer_path"):
        assert path["failed_count"] == 0, path


def _reattribute(fleet: FleetRun, *extra: str) -> str:
    since = format_datetime(fleet.plan.start)
    done = run_collector_cli(
        "reattribute", "--db", str(fleet.collector.db_path), "--since", since, *extra,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_reattribute_gives_the_same_causes(late: dict[str, object]) -> None:
    fleet = _fleet(late)
    causes = fleet.causes()
    out = _reattribute(fleet)
    assert f"Reattributed {len(causes)} failed payments" in out
    assert "; 0 changed cause." in out
    assert fleet.causes() == causes
    assert wrong(fleet.truth(), causes) == []


def test_reattribute_follows_the_attribution_settings(
    late: dict[str, object], tmp_path: Path
) -> None:
    fleet = _fleet(late)
    outage = [r for r in fleet.truth() if r.fault in OUTAGE]
    config = tmp_path / "stricter.toml"
    config.write_text("[attribution]\nfleet_min_stores = 4\n")
    out = _reattribute(fleet, "--config", str(config))
    assert f"; {len(outage)} changed cause." in out
    causes = fleet.causes()
    # three stores are no longer enough: each store's own path to the acquirer is blamed
    assert {causes[r.key] for r in outage} == {"acquirer_path"}
    assert fleet.incidents(cause="acquirer_outage", state="open") == []
    paths = fleet.incidents(cause="acquirer_path")
    assert {i["store_id"] for i in paths if i["failed_count"]} == {"S001", "S002", "S003"}
    # and back with the defaults
    _reattribute(fleet)
    assert {fleet.causes()[r.key] for r in outage} == {"acquirer_outage"}
