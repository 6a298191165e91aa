"""The fleet rule through a real collector: one acquirer outage is one incident; one store's
ISP outage is never an acquirer outage, even next to other stores' trouble with that acquirer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from tests.e2e.fleet import scenario_named, scenario_text, start_fleet, wrong

OUTAGE = """\
name = "outage"
duration = "40m"
stores = 6
terminals = 2
payments_per_hour = [120, 180]
background_failures_per_hour = 0.2

[[fault]]
name = "outage-a"
kind = "acquirer_outage"
acquirer = "acquirer-a"
stores = ["S001", "S002", "S003", "S004"]
at = "10m"
duration = "15m"
"""


def test_an_outage_across_four_stores_opens_one_incident_within_two_minutes(
    tmp_path: Path,
) -> None:
    scenario = replace(scenario_text(OUTAGE), noise=scenario_named("noisy").noise)
    fleet = start_fleet(tmp_path, scenario, seed=21)
    try:
        outage = fleet.fault("outage-a")
        fleet.run_until(outage.start + timedelta(seconds=120))
        opened = fleet.incidents(kind="payments")
        assert [(i["cause"], i["scope"], i["acquirer"], i["state"]) for i in opened] == [
            ("acquirer_outage", "acquirer", "acquirer-a", "open")
        ], opened
        incident = opened[0]
        assert incident["store_id"] is None
        stores = {t.split("-T")[0] for t in incident["terminals"]}
        assert len(stores) >= 3 and stores <= outage.stores
        assert incident["failed_count"] >= 3
        # the stores hit were never told it was their own path to the acquirer
        assert fleet.incidents(cause="acquirer_path") == []

        fleet.finish()
        truth = fleet.truth()
        assert wrong(truth, fleet.causes()) == []
        outage_rows = [r for r in truth if r.fault == "outage-a"]
        assert len({r.store_id for r in outage_rows}) == 4
        everything = fleet.incidents(kind="payments")
        assert [i["id"] for i in everything] == [incident["id"]]
        assert fleet.incidents(cause="acquirer_path") == []
        members = {
            (i["terminal_id"], i["txn_id"]): i["incident_id"]
            for i in fleet.failed(cause="acquirer_outage")
        }
        assert {members[r.key] for r in outage_rows} == {incident["id"]}
        final = fleet.get(f"/api/v1/incidents/{incident['id']}")
        assert final["failed_count"] == len(outage_rows)
        assert final["in_doubt_count"] == sum(r.in_doubt for r in outage_rows)
        assert {t.split("-T")[0] for t in final["terminals"]} == outage.stores
    finally:
        fleet.stop()


ISP_NEXT_TO_PATHS = """\
name = "isp-next-to-paths"
duration = "40m"
stores = 5
terminals = 2
payments_per_hour = [90, 120]
background_failures_per_hour = 0

[[fault]]
name = "isp-s001"
kind = "isp_down"
stores = ["S001"]
at = "10m"
duration = "15m"

[[fault]]
name = "path-s002"
kind = "acquirer_path"
acquirer = "acquirer-a"
stores = ["S002"]
at = "11m"
duration = "14m"

[[fault]]
name = "path-s003"
kind = "acquirer_path"
acquirer = "acquirer-a"
stores = ["S003"]
at = "12m"
duration = "12m"
"""


def test_one_stores_isp_outage_is_never_an_acquirer_outage(tmp_path: Path) -> None:
    """S001's ISP is down while S002 and S003 cannot reach acquirer-a: three stores fail
    acquirer-a together, but S001's own network explains its failures, so only two stores
    point at the acquirer — one short of fleet_min_stores (3)."""
    scenario = replace(scenario_text(ISP_NEXT_TO_PATHS), noise=scenario_named("noisy").noise)
    fleet = start_fleet(tmp_path, scenario, seed=9)
    try:
        fleet.finish()
        truth = fleet.truth()
        by_store = Counter((r.store_id, r.acquirer, str(r.expected_cause)) for r in truth)
        # the overlap is real: all three stores failed payments to acquirer-a
        for store, cause in (("S001", "isp"), ("S002", "acquirer_path"),
                             ("S003", "acquirer_path")):  # fmt: skip
            assert by_store[(store, "acquirer-a", cause)] >= 2, by_store
        items = fleet.failed()
        assert [i for i in items if i["cause"] == "acquirer_outage"] == []
        assert {i["cause"] for i in items if i["store_id"] == "S001"} == {"isp"}
        assert wrong(truth, fleet.causes()) == []
        assert fleet.incidents(cause="acquirer_outage") == []
        isp = fleet.incidents(cause="isp")
        assert [(i["scope"], i["store_id"]) for i in isp] == [("store", "S001")]
        paths = fleet.incidents(cause="acquirer_path")
        assert sorted(i["store_id"] for i in paths) == ["S002", "S003"]
    finally:
        fleet.stop()
