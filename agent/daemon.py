"""``posmon-agent run``: sources → spool → uplink, on one event loop.

The daemon owns the schedule (the loop's monotonic clock), the spool (all
SQLite work on one worker thread), the uplink and the local API. Sources
record events through :meth:`Agent.record`; nothing is sent that was not
first durable in the spool. Payment reports (local API, log files) go
through :attr:`Agent.payments`, which writes them to the same spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import psutil
import structlog

from protocol import AgentEvent, AgentInfo, Event

from . import __version__
from .config import AgentSettings
from .devices.supervisor import DeviceSupervisor
from .host import sample_from
from .logtail.runner import LogTails
from .pan_guard import GUARD
from .payments import Payments
from .probes.scheduler import ProbeScheduler
from .spool import Spool, SpoolError, SpoolFull
from .synthetic import SyntheticTxns
from .uplink import Uplink

log = structlog.get_logger("posmon.agent")
T = TypeVar("T")

#: How often the age bound is applied (the size bound is checked on every append).
AGE_CHECK_S = 60.0
#: How long a clean stop may spend sending what is left.
FLUSH_ON_STOP_S = 3.0


class SourceHealth:
    """Last success and error of one source; logs only when the state flips."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ok: bool | None = None
        self.last_ok_at: float | None = None
        self.error: str | None = None

    def success(self) -> None:
        if self.ok is False:
            log.info("source_recovered", source=self.name)
        self.ok, self.last_ok_at, self.error = True, time.time(), None

    def failure(self, err: BaseException) -> None:
        if self.ok is not False:
            log.warning("source_failed", source=self.name, error=str(err))
        self.ok, self.error = False, f"{type(err).__name__}: {err}"

    def to_json(self) -> dict[str, Any]:
        return {
            "state": {None: "starting", True: "ok", False: "failing"}[self.ok],
            "last_ok_at": _iso(self.last_ok_at),
            "error": self.error,
        }


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        spool_cfg = settings.spool
        self.spool = Spool(
            spool_cfg.path,
            max_bytes=spool_cfg.max_bytes,
            max_age_s=spool_cfg.max_age_s,
            sync=spool_cfg.sync,
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self.stop_event = asyncio.Event()
        self.started_at = time.time()
        self.sources: dict[str, SourceHealth] = {}
        self.uplink: Uplink | None = None
        self.probes: ProbeScheduler | None = None
        self.devices: DeviceSupervisor | None = None
        self.logtails: LogTails | None = None
        self.payments = Payments(settings.payments, self.spool_call, after_write=self.after_append)
        self.info: AgentInfo | None = None
        self._spool_failing = False

    async def spool_call(self, fn: Callable[[Spool], T]) -> T:
        """Run ``fn(spool)`` on the spool's own thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self.spool)

    async def record(self, events: list[Event]) -> None:
        """Make events durable in the spool (and keep the spool within its bound)."""
        try:
            await self.spool_call(lambda s: s.append(events))
        except SpoolError as err:
            # Nothing else can keep them: say so once, keep running.
            if not self._spool_failing:
                log.error("spool_write_failed", error=str(err), lost=len(events))
            self._spool_failing = True
            return
        if self._spool_failing:
            log.info("spool_write_recovered")
            self._spool_failing = False
        await self.after_append(events)

    async def after_append(self, events: Sequence[Event]) -> None:
        """After events were appended: keep the bound, send payments at once."""
        if self.spool.stored_bytes > self.spool.max_bytes:
            await self.enforce_bounds()
        if self.uplink is not None and any(e.priority >= 2 for e in events):
            self.uplink.wake()  # payments go out at once

    async def enforce_bounds(self) -> None:
        try:
            drops = await self.spool_call(lambda s: s.enforce_bounds())
        except SpoolError as err:
            log.error("spool_bound_failed", error=str(err))
            return
        for drop in drops:
            details = {f"dropped_{kind}": n for kind, n in sorted(drop.by_kind.items())}
            log.warning("spool_drop", reason=drop.reason, total=drop.total, **details)
        if drops:
            await self.report_drops(",".join(drop.reason for drop in drops))

    async def report_drops(self, reason: str) -> None:
        """Record a ``spool_drop`` event for every drop no earlier one reported."""

        def event(unreported: dict[str, int]) -> Event:
            details: dict[str, str | int] = {"reason": reason, "total": sum(unreported.values())}
            details.update({f"dropped_{kind}": n for kind, n in unreported.items()})
            return AgentEvent(seq=0, ts=_now(), event="spool_drop", details=details)

        try:
            await self.spool_call(lambda s: s.report_drops(event))
        except SpoolFull:
            pass  # no room even for the report: the next drop or start reports it
        except SpoolError as err:
            log.error("spool_drop_report_failed", error=str(err))

    # -- life cycle -------------------------------------------------------

    async def run(self) -> int:
        try:
            await self.spool_call(lambda s: s.open())
        except SpoolError as err:
            log.error("spool_open_failed", error=str(err))
            return 1
        ident = self.settings.agent
        self.info = AgentInfo(
            id=self.spool.agent_id,
            terminal_id=ident.terminal_id,
            store_id=ident.store_id,
            version=__version__,
        )
        try:
            await self.payments.load()
        except SpoolError as err:
            log.error("spool_open_failed", error=str(err))
            await self._close()
            return 1
        unclean = await self.spool_call(lambda s: s.get_meta("running") == "1")
        await self.spool_call(lambda s: s.set_meta("running", "1"))
        await self.record(
            [
                AgentEvent(
                    seq=0,
                    ts=_now(),
                    event="start",
                    details={
                        "version": __version__,
                        "pid": os.getpid(),
                        "config": str(self.settings.config_path),
                        "previous_stop": "unclean" if unclean else "clean",
                    },
                )
            ]
        )
        await self.report_drops("before_restart")  # drops a stop kept from being reported
        self.uplink = Uplink(
            self.settings.collector, self.settings.uplink, self.info, self.spool_call
        )
        # Timeouts are recorded from now on, also those that fell due while the
        # agent was not running; then the API may take reports.
        payments_task = asyncio.create_task(self.payments.run(self.stop_event), name="payments")
        api = None
        if self.settings.api.enabled:
            from .api import ApiServer

            try:
                api = ApiServer(self, asyncio.get_running_loop())
            except OSError as err:
                log.error("api_bind_failed", error=str(err))
                self.stop_event.set()
                await payments_task
                await self._close()
                return 1
            url = api.url
            await self.spool_call(lambda s: s.set_meta("api_url", url))
            log.info("api_listening", url=url)

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        log.info(
            "agent_started",
            agent_id=self.info.id,
            terminal_id=ident.terminal_id,
            spool=str(self.settings.spool.path),
            collector=self.settings.collector.url,
        )
        uplink_task = asyncio.create_task(self.uplink.run(self.stop_event), name="uplink")
        tasks = [
            asyncio.create_task(self._host_loop(), name="host"),
            asyncio.create_task(self._every(AGE_CHECK_S, self.enforce_bounds), name="bound"),
        ]
        if self.settings.probes.probes:
            self.probes = ProbeScheduler(self.settings.probes, self.record)
            tasks.append(asyncio.create_task(self.probes.run(self.stop_event), name="probes"))
        if self.settings.devices:
            self.devices = DeviceSupervisor(self.settings.devices, self.record)
            tasks.append(asyncio.create_task(self.devices.run(self.stop_event), name="devices"))
        if self.settings.logfiles:
            self.logtails = LogTails(self.settings.logfiles, self.payments, self.spool_call)
            tasks.append(asyncio.create_task(self.logtails.run(self.stop_event), name="logtails"))
        if self.settings.synthetic.rate_per_s > 0:
            synthetic = SyntheticTxns(self.settings.synthetic.rate_per_s)
            tasks.append(asyncio.create_task(synthetic.run(self.record, self.stop_event)))

        await self.stop_event.wait()
        log.info("agent_stopping")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if api is not None:
            await asyncio.to_thread(api.stop)  # no new payment reports from here on
            api = None
        await payments_task
        await self.payments.close()  # the reports taken in are written
        await uplink_task
        await self.record(
            [AgentEvent(seq=0, ts=_now(), event="stop", details={"pid": os.getpid()})]
        )
        await self.uplink.flush(FLUSH_ON_STOP_S)
        if api is not None:
            await asyncio.to_thread(api.stop)
        with contextlib.suppress(SpoolError):
            await self.spool_call(lambda s: s.set_meta("running", "0"))
        await self._close()
        log.info("agent_stopped")
        return 0

    async def _close(self) -> None:
        with contextlib.suppress(SpoolError):
            await self.spool_call(lambda s: s.close())
        self._executor.shutdown(wait=True)

    # -- sources ----------------------------------------------------------

    async def _every(self, interval: float, fn: Callable[[], Awaitable[None]]) -> None:
        """Call ``fn`` every ``interval`` seconds on the monotonic clock.

        The first call is jittered over one interval so that a fleet started
        together does not report in lockstep; missed ticks are skipped, not
        bunched.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + random.uniform(0.0, interval)
        while not self.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), max(0.0, deadline - loop.time()))
            if self.stop_event.is_set():
                return
            await fn()
            deadline += interval
            if deadline < loop.time():
                deadline = loop.time() + interval

    async def _host_loop(self) -> None:
        health = self.sources.setdefault("host", SourceHealth("host"))
        disk_path = self.settings.host.disk_path
        await asyncio.to_thread(psutil.cpu_percent, None)  # prime the CPU counter

        async def sample() -> None:
            try:
                event = await asyncio.to_thread(sample_from, psutil, disk_path)
            except Exception as err:  # psutil raises many kinds; the source is what failed
                health.failure(err)
                return
            health.success()
            await self.record([event])

        await self._every(self.settings.host.interval_s, sample)

    # -- status -----------------------------------------------------------

    async def status_json(self) -> dict[str, Any]:
        stats = await self.spool_call(lambda s: s.stats())
        now = time.time()
        assert self.info is not None and self.uplink is not None
        return {
            "agent": {
                "id": self.info.id,
                "terminal_id": self.info.terminal_id,
                "store_id": self.info.store_id,
                "version": self.info.version,
                "pid": os.getpid(),
                "started_at": _iso(self.started_at),
                "uptime_s": round(now - self.started_at, 1),
                "collector": self.settings.collector.url,
            },
            "spool": {
                "path": str(self.settings.spool.path),
                "depth": stats.depth,
                "bytes": stats.bytes,
                "max_bytes": self.spool.max_bytes,
                "by_kind": stats.by_kind,
                "quarantined": stats.quarantined,
                "dropped": stats.dropped,
                "oldest_age_s": None
                if stats.oldest_created_at is None
                else round(now - stats.oldest_created_at, 1),
                "next_seq": stats.next_seq,
            },
            "uplink": self.uplink.status.to_json(),
            "sources": {name: h.to_json() for name, h in sorted(self.sources.items())},
            "probes": [] if self.probes is None else self.probes.status_json(),
            "devices": [] if self.devices is None else self.devices.status_json(),
            "logtails": [] if self.logtails is None else self.logtails.status_json(),
            "payments": self.payments.status_json(),
            "pan_guard": GUARD.counts(),
        }


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()
