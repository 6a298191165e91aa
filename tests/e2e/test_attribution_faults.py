"""Each fault kind, in a noisy fleet: its failed payments get the right cause; no evidence, unknown.

One small run per fault kind (the shipped ``<kind>.toml`` scenarios: 3-4
stores x 2 terminals, 40 minutes, the fault from minute 10 to 25) with the
``[noise]`` of ``noisy.toml`` on top, against a real collector; the causes are
read back through ``GET /api/v1/transactions`` and compared with the
simulator's ground truth, payment by payment.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from collector.fleetsim.scenario import FAULT_KINDS
from tests.e2e.fleet import FleetRun, scenario_named, scenario_text, start_fleet, wrong

#: What every failed payment of the run must be called (the fault's cause; unknown elsewhere).
KINDS = sorted(FAULT_KINDS)


def _run(tmp_path: Path, scenario_name: str, seed: int) -> FleetRun:
    fleet = start_fleet(tmp_path, scenario_named(scenario_name, noise_from="noisy"), seed=seed)
    fleet.finish()
    return fleet


@pytest.mark.parametrize("kind", KINDS)
def test_failed_payments_of_each_fault_get_its_cause(tmp_path: Path, kind: str) -> None:
    fleet = _run(tmp_path, kind, seed=7)
    try:
        fault = fleet.fault(kind)
        truth = fleet.truth()
        causes = fleet.causes()
        broken = [row for row in truth if row.fault == fault.name]
        # the fault broke payments, and only in the stores (terminals) it hit
        assert len(broken) >= 2, f"{kind}: the fault broke {len(broken)} payment(s)"
        assert {row.terminal_id for row in broken} <= fault.terminals
        assert {str(row.expected_cause) for row in broken} == {str(fault.cause)}
        assert wrong(truth, causes) == []
        # nothing else is called failed: the noise (declines, duplicates, lossy windows) is not
        truth_keys = {row.key for row in truth}
        assert [key for key in causes if key not in truth_keys] == []
    finally:
        fleet.stop()


NO_FAULTS = """\
name = "background"
duration = "2h"
stores = 10
terminals = 2
payments_per_hour = [40, 60]
background_failures_per_hour = 1.0
"""


def test_isolated_timeouts_with_no_evidence_are_unknown(tmp_path: Path) -> None:
    """A fleet with no fault and ordinary noise: every timeout is unknown, confidence 0."""
    base = scenario_text(NO_FAULTS)
    noisy = scenario_named("noisy")
    from dataclasses import replace

    fleet = start_fleet(tmp_path, replace(base, noise=noisy.noise), seed=4)
    try:
        fleet.finish()
        truth = fleet.truth()
        assert len(truth) >= 20 and {str(r.expected_cause) for r in truth} == {"unknown"}
        items = fleet.failed()
        assert len(items) == len(truth)
        called = Counter(str(i["cause"]) for i in items)
        assert called == Counter({"unknown": len(truth)}), wrong(truth, fleet.causes())
        for item in items:
            assert item["confidence"] == 0 and item["evidence"] == []
            assert item["incident_id"] is None
        assert fleet.incidents(kind="payments") == []
    finally:
        fleet.stop()
