"""A simulated fleet against a real collector, for the attribution scenario tests.

    fleet = start_fleet(tmp_path, scenario, seed=5)      # collector process + FleetSim
    try:
        fleet.run_until(fault.start + timedelta(minutes=2))
        fleet.wait_idle()                                 # GET /api/v1/fleet: correlator idle
        fleet.incidents(cause="acquirer_outage")          # the real query API, viewer token
        fleet.finish()                                    # to the end, backlogs drained
        fleet.failed()                                    # every failed payment, all pages
    finally:
        fleet.stop()

The collector is a real ``posmon-collector serve`` on ``127.0.0.1:0`` with
its own SQLite file (and a ``--config`` file when settings are given); the
simulated agents post through its ingest API with their own tokens; every
read goes through the query API with a viewer token. Simulated time starts
shortly before now (minus the scenario's length), so late evidence is within
the correlator's revision horizon, which runs on the collector's clock.
"""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from collector.fleetsim.generate import FleetSim
from collector.fleetsim.plan import Fault, Plan, plan_faults
from collector.fleetsim.post import create_tokens
from collector.fleetsim.scenario import (
    Scenario,
    find_scenario,
    load_scenario,
    parse_scenario,
)
from collector.fleetsim.truth import TruthRow
from protocol.fields import format_datetime
from tests.helpers import CollectorProc, start_collector

#: A failsafe only (no test asserts a timing): the correlator catches up long before this.
IDLE_TIMEOUT_S = 180.0
PAGE = 1000


def scenario_named(name: str, *, noise_from: str | None = None, **overrides: Any) -> Scenario:
    """A shipped scenario (``isp_down``, ``mixed``…), optionally with another one's ``[noise]``."""
    scenario = load_scenario(find_scenario(name))
    if noise_from is not None:
        scenario = replace(scenario, noise=load_scenario(find_scenario(noise_from)).noise)
    return replace(scenario, **overrides) if overrides else scenario


def scenario_text(text: str, where: str = "test-scenario") -> Scenario:
    return parse_scenario(tomllib.loads(text), where)


def with_noise(scenario: Scenario, **noise: Any) -> Scenario:
    return replace(scenario, noise=replace(scenario.noise, **noise))


class ApiError(AssertionError):
    """The query API answered something other than 200."""


@dataclass
class FleetRun:
    collector: CollectorProc
    plan: Plan
    sim: FleetSim
    viewer: str
    directory: Path

    # -- driving ------------------------------------------------------------------

    def run_until(self, until: datetime) -> None:
        self.sim.run_until(until)

    def finish(self) -> None:
        self.sim.run()

    def stop(self) -> None:
        try:
            self.sim.__exit__(None, None, None)
        finally:
            self.collector.stop()

    # -- the plan and the truth ---------------------------------------------------

    def fault(self, name_or_kind: str) -> Fault:
        return next(f for f in self.plan.faults if name_or_kind in (f.name, f.kind))

    def truth(self) -> list[TruthRow]:
        return self.sim.truth()

    # -- the query API -------------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
        url = self.collector.url.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.viewer}"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise ApiError(f"GET {url}: {err.code} {err.read()[:300]!r}") from None

    def items(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paginated list."""
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.get(path, limit=PAGE, **params, **({"cursor": cursor} if cursor else {}))
            out += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return out

    def wait_idle(self) -> dict[str, Any]:
        """Wait until the correlator has read every stored event; the fleet view then."""
        deadline = time.monotonic() + IDLE_TIMEOUT_S
        while True:
            fleet: dict[str, Any] = self.get("/api/v1/fleet")
            correlator = fleet["correlator"]
            if correlator["idle"] and correlator.get("pending_events", 0) == 0:
                return fleet
            if time.monotonic() > deadline:
                raise AssertionError(f"the correlator is not idle: {correlator}")
            time.sleep(0.2)

    def failed(self, **filters: Any) -> list[dict[str, Any]]:
        """Every failed payment the API lists (after waiting for the correlator)."""
        self.wait_idle()
        return self.items("/api/v1/transactions", failed=True, **filters)

    def incidents(self, **filters: Any) -> list[dict[str, Any]]:
        self.wait_idle()
        filters.setdefault("state", "all")
        return self.items("/api/v1/incidents", **filters)

    def causes(self) -> dict[tuple[str, str], str | None]:
        """(terminal, txn_id) -> cause of every failed payment listed."""
        return {(i["terminal_id"], i["txn_id"]): i["cause"] for i in self.failed()}


def iso(moment: datetime) -> str:
    return format_datetime(moment)


def default_start(scenario: Scenario) -> datetime:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(seconds=scenario.duration_s) - timedelta(minutes=10)


def start_fleet(
    directory: Path,
    scenario: Scenario,
    *,
    seed: int = 1,
    settings: str | None = None,
    start: datetime | None = None,
) -> FleetRun:
    """A collector on a fresh database in ``directory`` and the scenario's fleet, not yet run.

    ``settings``: TOML for the collector's ``--config`` (``[attribution]`` …).
    """
    directory.mkdir(parents=True, exist_ok=True)
    plan = plan_faults(scenario, start=start or default_start(scenario), seed=seed)
    args: list[str] = []
    if settings is not None:
        config = directory / "collector.toml"
        config.write_text(settings)
        args = ["--config", str(config)]
    collector = start_collector(directory / "collector.db", args)
    try:
        tokens, viewer = asyncio.run(
            create_tokens(str(collector.db_path), plan.all_terminals(), viewer="scenarios")
        )
        assert viewer is not None
        sim = FleetSim(plan, url=collector.url, tokens=tokens, seed=seed)
        sim.__enter__()
    except BaseException:
        collector.kill()
        raise
    return FleetRun(collector, plan, sim, viewer, directory)


def wrong(truth: list[TruthRow], causes: dict[tuple[str, str], str | None]) -> list[str]:
    """One readable line per payment whose cause is not the expected one."""
    return [
        f"{row.terminal_id} {row.txn_id} {row.outcome} at {row.ts} (fault {row.fault}): "
        f"expected {row.expected_cause}, got {causes.get(row.key, 'missing')}"
        for row in truth
        if causes.get(row.key, "missing") != str(row.expected_cause)
    ]
