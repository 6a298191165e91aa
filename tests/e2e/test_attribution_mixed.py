"""Accuracy over the shipped ``noisy`` scenario: every fault kind over three hours on 12 stores x
2 terminals, in a fleet with background noise — at least 95 % right for every cause.
"""

from __future__ import annotations

from pathlib import Path

from collector.fleetsim.scenario import FAULT_KINDS
from collector.fleetsim.score import format_score, score
from tests.e2e.fleet import scenario_named, start_fleet

MIN_ACCURACY = 0.95


def test_noisy_mixed_fleet_accuracy_per_cause(tmp_path: Path) -> None:
    scenario = scenario_named("noisy")
    assert scenario.noise.on
    fleet = start_fleet(tmp_path, scenario, seed=3)
    try:
        fleet.finish()
        truth = fleet.truth()
        result = score(truth, fleet.failed(), run_id=fleet.sim.run_id)
        table = format_score(result)
        every_cause = {str(c) for c in FAULT_KINDS.values()} | {"unknown"}
        assert {c.cause for c in result.causes if c.expected} == every_cause, table
        for cause in result.causes:
            assert cause.accuracy >= MIN_ACCURACY, table
        assert result.unexpected == 0, table
        # the noise reached the collector: retried reports, printers out of paper
        assert fleet.sim.counters.duplicates > 0
        printers = fleet.incidents(kind="health", cause="device")
        assert any(i["device"] == "printer" for i in printers), printers
    finally:
        fleet.stop()
