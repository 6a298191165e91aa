"""Poll every configured device on the event loop and record ``device_status``.

Each device has its own task: one poll per ``interval_s`` on the monotonic
clock, started on the agent's ticks (:mod:`agent.ticks`), from one random
offset shared by all devices, so that devices with the same interval poll
together and share the event loop's wake-ups (the CPU figure in
BENCHMARKS.md). A poll is bounded
(``POLL_GUARD`` × its timeout), so a device that hangs delays only itself,
and no device error ever stops the agent.

What a poll's outcome becomes (:func:`reading_for`):

- a :class:`Reading` from the driver → itself;
- :class:`DeviceGone` → ``disconnected`` with the reason;
- :class:`DevicePortBusy` / :class:`DeviceSilent` / :class:`DeviceProtocolError`
  → ``fault`` with the reason ("no answer", "the device answers garbage …");
- anything else (a driver bug) → ``fault`` "driver error", logged once.

A ``device_status`` is recorded when the state, the flags or the kind of
trouble change, and otherwise as a heartbeat (``heartbeat: true``) once per
``heartbeat_s`` — attributes such as a UPS's voltage change on every poll
and are not a change of state. State changes are logged; polls are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from protocol import DeviceStatus, Event

from ..pan_guard import GUARD
from ..ticks import Ticks
from .base import (
    DeviceError,
    DeviceGone,
    DevicePortBusy,
    DeviceProtocolError,
    DeviceSilent,
    DeviceSpec,
    Driver,
    Reading,
)
from .registry import driver_kind

log = structlog.get_logger("posmon.agent.devices")

#: Polls start on the agent's ticks (see agent/ticks.py), this far apart.
TICK_S = 0.25
#: A whole poll may take this many timeouts: a modem's first poll asks ten
#: questions, a NUT client may reconnect and ask six again.
POLL_GUARD = 20


def reading_for(outcome: Reading | BaseException) -> tuple[Reading, str]:
    """The reading for a poll's outcome, and the kind of trouble (for change detection)."""
    if isinstance(outcome, Reading):
        return outcome, "reading"
    if isinstance(outcome, DeviceGone):
        return Reading("disconnected", reason=str(outcome) or "device not found"), "gone"
    if isinstance(outcome, DevicePortBusy):
        return Reading("fault", reason=str(outcome)), "busy"
    if isinstance(outcome, DeviceSilent):
        return Reading("fault", reason=f"no answer from the device ({outcome})"), "silent"
    if isinstance(outcome, DeviceProtocolError):
        return Reading("fault", reason=f"the device answers garbage: {outcome}"), "garbage"
    if isinstance(outcome, TimeoutError):
        return Reading("fault", reason="the poll took too long"), "silent"
    return Reading("fault", reason=f"driver error: {type(outcome).__name__}: {outcome}"), "bug"


async def poll_once(spec: DeviceSpec, driver: Driver) -> tuple[Reading, str]:
    """One bounded poll; never raises (but for cancellation)."""
    try:
        async with asyncio.timeout(spec.timeout_s * POLL_GUARD + 1.0):
            outcome: Reading | BaseException = await driver.poll()
    except (DeviceError, TimeoutError) as err:
        outcome = err
    except Exception as err:  # a driver bug must not stop the agent
        log.error("device_driver_crashed", device=spec.name, error=f"{type(err).__name__}: {err}")
        outcome = err
    return reading_for(outcome)


class DeviceRunner:
    def __init__(self, spec: DeviceSpec, driver: Driver) -> None:
        self.spec = spec
        self.driver = driver
        self.reading: Reading | None = None
        self.trouble: str | None = None
        self.since: datetime | None = None
        self.last_poll_at: datetime | None = None
        self.sent_at: float | None = None  # monotonic, last device_status recorded
        self.polls = 0

    def to_json(self) -> dict[str, Any]:
        r = self.reading
        return {
            "name": self.spec.name,
            "kind": self.spec.kind,
            "port": self.spec.port,
            "state": "starting" if r is None else r.state,
            "flags": [] if r is None else list(r.flags),
            "reason": None if r is None else r.reason,
            "attributes": {} if r is None else dict(r.attributes),
            "since": None if self.since is None else self.since.isoformat(),
            "last_poll_at": None if self.last_poll_at is None else self.last_poll_at.isoformat(),
        }


class DeviceSupervisor:
    def __init__(
        self,
        specs: tuple[DeviceSpec, ...],
        record: Callable[[list[Event]], Awaitable[None]],  # the agent's durable record
        *,
        create: Callable[[DeviceSpec], Driver] | None = None,
    ) -> None:
        self.record = record
        make = create or (lambda spec: driver_kind(spec.kind).create(spec))
        self.runners = [DeviceRunner(spec, make(spec)) for spec in specs]
        shortest = min((s.interval_s for s in specs), default=1.0)
        self._ticks = Ticks(min(TICK_S, shortest / 4))
        # One random offset for all devices: those with the same interval poll
        # on the same tick, so their questions and answers share wake-ups.
        self._offset = random.uniform(0.0, shortest)

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self._loop(r, stop), name=f"device:{r.spec.name}")
            for r in self.runners
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for runner in self.runners:
                with contextlib.suppress(Exception):
                    await runner.driver.close()

    def status_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.runners]

    async def _loop(self, runner: DeviceRunner, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        interval = runner.spec.interval_s
        next_at = self._ticks.at_or_after(loop.time() + self._offset % interval)
        while not stop.is_set():
            # a plain sleep (one timer); run() cancels this task when the agent stops
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if stop.is_set():
                return
            await self.poll(runner)
            next_at += interval
            if next_at < loop.time():
                next_at = self._ticks.at_or_after(loop.time())

    async def poll(self, runner: DeviceRunner) -> None:
        """Poll ``runner``'s device once and record what changed (or a heartbeat)."""
        reading, trouble = await poll_once(runner.spec, runner.driver)
        now = datetime.now(UTC)
        runner.polls += 1
        runner.last_poll_at = now
        previous = runner.reading
        changed = previous is None or (previous.state, previous.flags, runner.trouble) != (
            reading.state,
            reading.flags,
            trouble,
        )
        runner.reading, runner.trouble = reading, trouble
        mono = time.monotonic()
        due = runner.sent_at is None or mono - runner.sent_at >= runner.spec.heartbeat_s
        if not changed and not due:
            return
        spec = runner.spec
        if changed:
            runner.since = now
            level = log.info if reading.state == "ok" else log.warning
            level(
                "device_state",
                device=spec.name,
                kind=spec.kind,
                state=reading.state,
                flags=list(reading.flags),
                reason=reading.reason,
            )
        runner.sent_at = mono
        # Device text (a modem's operator name, a reason quoting an answer) goes
        # through the PAN guard like everything else the agent takes in.
        attributes = {k: GUARD.scrub(v)[0] if isinstance(v, str) else v
                      for k, v in reading.attributes.items()}  # fmt: skip
        reason = None if reading.reason is None else GUARD.scrub(reading.reason[:512])[0]
        event = DeviceStatus(
            seq=0,
            ts=now,
            device=spec.name,
            device_kind=spec.kind,
            state=reading.state,
            flags=reading.flags,
            attributes=attributes,
            reason=reason,
            heartbeat=not changed,
        )
        await self.record([event])
