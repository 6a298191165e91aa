"""Run every configured probe on one event loop and turn attempts into events.

Each probe has its own task: the first attempt at a random point of its
first interval (a fleet started together does not probe in lockstep), then
one attempt per ``interval_s`` on the loop's monotonic clock. Attempts start
on the agent's ticks — every ``TICK_S`` (250 ms, or a quarter of the
shortest interval), at a phase drawn at random when the agent starts — so
probes that are due together share one wake-up of the event loop instead of
each paying for its own (the CPU figure in BENCHMARKS.md). An attempt never outlives its
``timeout_s`` (plus a one-second guard around the probe's own timeout), so a
target that hangs or resets delays nothing but its own next attempt.

One more task closes the windows: every ``window_s`` it turns each probe's
results into a ``probe_window`` (``ts`` = the end of the window) and records
them together. A probe with no finished attempt in a window sends none.

Healthy ⇄ failing (the debounce, quoted in the README): a probe becomes
``fail`` after ``fail_after`` consecutive failed attempts (default 3) and
``ok`` again after ``recover_after`` consecutive good ones (default 2). Its
first state after start is reported the same way. Each flip is a
``probe_change`` whose ``ts`` is the time of the first attempt of the streak
that caused it — when the trouble (or the recovery) began, not when it was
confirmed — and whose ``error`` is the last error code of the streak.

A probe that cannot run here (:class:`ProbeUnavailable`, e.g. ICMP without
permission, Wi-Fi without hardware) is ``unavailable``: it records an
``agent_event`` ``probe_unavailable`` with the reason once, sends no windows
and retries once a window. A bug in a probe (any other exception) counts as
a failed attempt with error ``probe_error`` and is logged once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from protocol import AgentEvent, Event, ProbeChange

from ..ticks import Ticks
from .base import ProbeResult, ProbeUnavailable
from .registry import ProbeFn, build
from .settings import ProbeSpec, ProbesSettings
from .window import Window

log = structlog.get_logger("posmon.agent.probes")

Record = Callable[[list[Event]], Awaitable[None]]
State = Literal["starting", "ok", "fail", "unavailable"]

#: Added to a probe's own timeout before the scheduler gives up on an attempt.
GUARD_S = 1.0
#: Attempts start on the agent's ticks, this far apart (at most a quarter of the
#: shortest interval), so that probes due together share one wake-up of the loop.
TICK_S = 0.25


@dataclass(frozen=True, slots=True)
class Flip:
    state: Literal["ok", "fail"]
    since: datetime  # the first attempt of the streak
    error: str | None


class Debounce:
    """Healthy ⇄ failing with hysteresis; pure, fed one attempt at a time."""

    def __init__(self, fail_after: int, recover_after: int) -> None:
        self.fail_after = fail_after
        self.recover_after = recover_after
        self.state: Literal["ok", "fail"] | None = None
        self._streak_ok: bool | None = None
        self._streak_len = 0
        self._streak_since: datetime | None = None

    def feed(self, ok: bool, error: str | None, at: datetime) -> Flip | None:
        """Take one attempt; return the flip it completes, if any."""
        if ok != self._streak_ok:
            self._streak_ok, self._streak_len, self._streak_since = ok, 0, at
        self._streak_len += 1
        wanted: Literal["ok", "fail"] = "ok" if ok else "fail"
        needed = self.recover_after if ok else self.fail_after
        if self.state == wanted or self._streak_len < needed:
            return None
        self.state = wanted
        assert self._streak_since is not None
        return Flip(state=wanted, since=self._streak_since, error=None if ok else error)


async def attempt(spec: ProbeSpec, fn: ProbeFn) -> ProbeResult:
    """One attempt, bounded; every failure of the target is a result.

    Raises :class:`ProbeUnavailable` when the probe cannot run on this host.
    """
    try:
        async with asyncio.timeout(spec.timeout_s + GUARD_S):
            return await fn()
    except TimeoutError:
        return ProbeResult(ok=False, error="timeout")
    except ProbeUnavailable:
        raise
    except Exception as err:  # a bug in a probe must not stop the others
        log.error("probe_crashed", probe=spec.name, error=f"{type(err).__name__}: {err}")
        return ProbeResult(ok=False, error="probe_error")


class Runner:
    """One probe's schedule, current window and state."""

    def __init__(self, spec: ProbeSpec, fn: ProbeFn, settings: ProbesSettings) -> None:
        self.spec = spec
        self.fn = fn
        self.window = Window()
        self.debounce = Debounce(settings.fail_after, settings.recover_after)
        self.unavailable: str | None = None
        self.last: ProbeResult | None = None
        self.last_at: datetime | None = None
        self.since: datetime | None = None

    @property
    def state(self) -> State:
        if self.unavailable is not None:
            return "unavailable"
        return self.debounce.state or "starting"

    def to_json(self) -> dict[str, Any]:
        spec, last = self.spec, self.last
        return {
            "name": spec.name,
            "type": spec.type,
            "target": spec.target,
            "role": spec.role,
            "acquirer": spec.acquirer,
            "state": self.state,
            "since": None if self.since is None else self.since.isoformat(),
            "reason": self.unavailable,
            "last_attempt_at": None if self.last_at is None else self.last_at.isoformat(),
            "last_error": None if last is None else last.error,
            "last_rtt_ms": None if last is None or last.rtt_ms is None else round(last.rtt_ms, 3),
        }


class ProbeScheduler:
    """All probes of one agent; :meth:`run` until ``stop`` is set."""

    def __init__(
        self,
        settings: ProbesSettings,
        record: Record,
        *,
        builder: Callable[[ProbeSpec], ProbeFn] = build,
    ) -> None:
        self.settings = settings
        self.record = record
        self.runners = [Runner(spec, builder(spec), settings) for spec in settings.probes]
        shortest = min((s.interval_s for s in settings.probes), default=1.0)
        self._ticks = Ticks(min(TICK_S, shortest / 4))

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self._probe_loop(r, stop), name=f"probe:{r.spec.name}")
            for r in self.runners
        ]
        tasks.append(asyncio.create_task(self._window_loop(stop), name="probe-windows"))
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def status_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.runners]

    # -- one probe ------------------------------------------------------------

    async def _probe_loop(self, runner: Runner, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        interval = runner.spec.interval_s
        next_at = self._ticks.at_or_after(loop.time() + random.uniform(0.0, interval))
        while True:
            if await _sleep_until(next_at, stop):
                return
            try:
                result = await attempt(runner.spec, runner.fn)
            except ProbeUnavailable as err:
                await self._unavailable(runner, str(err))
                next_at = max(loop.time(), next_at) + max(interval, self.settings.window_s)
                continue
            await self._result(runner, result)
            next_at += interval
            if next_at < loop.time():  # the attempt outlasted its interval: skip, don't bunch
                next_at = self._ticks.at_or_after(loop.time())

    async def _unavailable(self, runner: Runner, reason: str) -> None:
        if runner.unavailable == reason:
            return
        runner.unavailable, runner.since = reason, _now()
        log.warning("probe_unavailable", probe=runner.spec.name, reason=reason)
        details = {"probe": runner.spec.name, "type": runner.spec.type, "reason": reason[:512]}
        await self.record(
            [AgentEvent(seq=0, ts=_now(), event="probe_unavailable", details=details)]
        )

    async def _result(self, runner: Runner, result: ProbeResult) -> None:
        now = _now()
        if runner.unavailable is not None:
            log.info("probe_available", probe=runner.spec.name)
            runner.unavailable, runner.since = None, now
        runner.last, runner.last_at = result, now
        runner.window.add(result)
        flip = runner.debounce.feed(result.ok, result.error, now)
        if flip is None:
            return
        runner.since = flip.since
        spec = runner.spec
        if flip.state == "fail":
            log.warning("probe_failed", probe=spec.name, role=spec.role, error=flip.error)
        else:
            log.info("probe_recovered", probe=spec.name, role=spec.role)
        change = ProbeChange(
            seq=0,
            ts=flip.since,
            probe=spec.type,
            target=spec.target,
            role=spec.role,
            acquirer=spec.acquirer,
            state=flip.state,
            error=flip.error,
        )
        await self.record([change])

    # -- windows --------------------------------------------------------------

    async def _window_loop(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        window_s = self.settings.window_s
        next_at = loop.time() + window_s
        while True:
            if await _sleep_until(next_at, stop):
                return
            await self.close_windows(window_s)
            next_at += window_s
            if next_at < loop.time():
                next_at = loop.time() + window_s

    async def close_windows(self, window_s: float) -> None:
        """Record one ``probe_window`` per probe that finished an attempt."""
        now = _now()
        events: list[Event] = []
        for runner in self.runners:
            window, runner.window = runner.window, Window()
            if window.sent == 0:
                continue
            spec = runner.spec
            events.append(
                window.to_event(
                    now,
                    probe=spec.type,
                    target=spec.target,
                    role=spec.role,
                    acquirer=spec.acquirer,
                    window_s=window_s,
                )
            )
        if events:
            await self.record(events)


async def _sleep_until(deadline: float, stop: asyncio.Event) -> bool:
    """Wait until the loop's clock reaches ``deadline``; True if ``stop`` was set.

    A plain sleep (one timer), not a wait on ``stop`` (a task and a timer per
    wait): :meth:`ProbeScheduler.run` cancels the sleepers when it stops.
    """
    if stop.is_set():
        return True
    await asyncio.sleep(max(0.0, deadline - asyncio.get_running_loop().time()))
    return stop.is_set()


def _now() -> datetime:
    return datetime.now(UTC)
