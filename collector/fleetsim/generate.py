"""The fleet simulation: every terminal's agent, advanced together and posted in time order.

Python API (what ``simulate-fleet`` and the scenario tests use)::

    scenario = load_scenario("mixed.toml")
    plan = plan_faults(scenario, start=start, stores=12, terminals=2, seed=7)
    tokens, _ = asyncio.run(create_tokens(db, plan.all_terminals()))
    with FleetSim(plan, url=url, tokens=tokens, seed=7) as sim:
        sim.run_until(plan.start + timedelta(minutes=30))   # then look at the collector
        sim.run()                                           # to the end, backlogs drained
        rows = sim.truth()

Simulated time runs as fast as the collector takes reports. It advances in
steps of the upload interval: every terminal runs its actions up to the
step's end, then the reports due are posted (in order per terminal,
terminals side by side), so the collector hears the fleet roughly in the
order of simulated time — and a store whose WAN was down uploads its backlog
late, as real agents do. In an ``async`` test use ``await sim.advance_to(t)``
inside ``async with FleetSim(...)`` instead of the synchronous methods.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Final

from .agents import TerminalSim
from .plan import Plan
from .post import PostCounters, Poster
from .truth import TruthRow, truth_rows

#: The simulated agents' version string.
SIM_VERSION: Final = "0.1.0+fleetsim"
#: The fleet runs this many upload intervals past the scenario's end, so every backlog goes out.
DRAIN_INTERVALS: Final = 3


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a simulation is: simulated time reached, what was posted, what failed."""

    now: datetime
    end: datetime
    reports: int
    events: int
    payments: int
    failed: int


class FleetSim:
    """Every terminal of a :class:`Plan`, posting through one :class:`Poster`."""

    def __init__(
        self,
        plan: Plan,
        *,
        url: str,
        tokens: dict[str, str],
        seed: int = 1,
        run_id: str | None = None,
        gzip: bool = True,
        progress: Callable[[Progress], None] | None = None,
        progress_every_s: float = 900.0,
    ) -> None:
        self.plan = plan
        #: names this run's agents and payments, so runs against one collector never collide
        self.run_id = run_id or secrets.token_hex(3)
        self.terminals = [
            TerminalSim(plan, store, terminal, run_id=self.run_id, seed=seed, version=SIM_VERSION)
            for store, terminal in plan.all_terminals()
        ]
        missing = [t.terminal for t in self.terminals if t.terminal not in tokens]
        if missing:
            raise ValueError(f"no agent token for terminal(s) {', '.join(missing[:5])}")
        self.poster = Poster(url, tokens, gzip=gzip)
        self.now = plan.start
        self._progress = progress
        self._progress_every = timedelta(seconds=progress_every_s)
        self._next_progress = plan.start + self._progress_every
        self._runner: asyncio.Runner | None = None
        self._open = False

    @property
    def end(self) -> datetime:
        """When the scenario ends (:meth:`run` goes a little further to drain backlogs)."""
        return self.plan.end

    @property
    def counters(self) -> PostCounters:
        return self.poster.counters

    # -- async API --------------------------------------------------------------

    async def __aenter__(self) -> FleetSim:
        await self.poster.__aenter__()
        self._open = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._open = False
        await self.poster.close()

    async def advance_to(self, until: datetime) -> None:
        """Simulate up to ``until`` and post every report due by then."""
        if not self._open:
            raise RuntimeError("FleetSim used outside 'with' / 'async with'")
        step = timedelta(seconds=self.plan.scenario.upload_interval_s)
        while self.now < until:
            target = min(self.now + step, until)
            reports = []
            for terminal in self.terminals:
                terminal.advance(target)
                reports += terminal.take_reports()
            await self.poster.post_all(reports)
            self.now = target
            if self._progress is not None and (
                self.now >= self._next_progress or self.now >= until
            ):
                self._progress(self.progress())
                while self._next_progress <= self.now:
                    self._next_progress += self._progress_every

    async def finish(self) -> None:
        """Run to the scenario's end plus a few upload intervals, so every backlog is posted."""
        drain = timedelta(seconds=self.plan.scenario.upload_interval_s * DRAIN_INTERVALS)
        await self.advance_to(self.plan.end + drain)

    # -- sync API ---------------------------------------------------------------

    def __enter__(self) -> FleetSim:
        self._runner = asyncio.Runner()
        self._runner.run(self.__aenter__())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            try:
                runner.run(self.__aexit__())
            finally:
                runner.close()

    def run_until(self, until: datetime) -> None:
        """Synchronous :meth:`advance_to` (inside ``with FleetSim(...)``)."""
        if self._runner is None:
            raise RuntimeError("use 'with FleetSim(...) as sim' for the synchronous API")
        self._runner.run(self.advance_to(until))

    def run(self) -> None:
        """Synchronous :meth:`finish`."""
        if self._runner is None:
            raise RuntimeError("use 'with FleetSim(...) as sim' for the synchronous API")
        self._runner.run(self.finish())

    # -- what happened ----------------------------------------------------------

    def truth(self) -> list[TruthRow]:
        """The truth of every failed payment recorded so far (see :mod:`.truth`)."""
        records = [p for t in self.terminals for p in t.payments]
        return truth_rows(records, fleet_min_stores=self.plan.scenario.fleet_min_stores)

    def progress(self) -> Progress:
        payments = [p for t in self.terminals for p in t.payments]
        return Progress(
            now=self.now,
            end=self.plan.end,
            reports=self.counters.reports,
            events=self.counters.events,
            payments=len(payments),
            failed=sum(p.failed for p in payments),
        )
