"""The correlator: a background task in the collector that follows the ``events`` table.

Each *pass* is ONE write job on the storage's writer thread (one transaction),
and a short one: the writer also serves ingest, first come first served, so a
pass must never hold it for long (the collector answers a report only after
committing it). A pass:

1. reads up to ``limit`` events after the cursor (``events.rowid``), in
   insertion order — the limit adapts so that this part takes about half of
   :data:`PASS_BUDGET_S`;
2. brings the current-state tables up to them (:mod:`.state`) and the payments
   (:mod:`.txns`): a new or changed failed payment becomes *pending*, and so do
   the failed payments the new evidence may change (``txns.pending``; which
   ones is :mod:`.txns`' docstring);
3. decides pending payments, first causes before revisions, oldest first, in
   small chunks until :data:`PASS_BUDGET_S` is spent (at least one): first
   this store's verdict for all (``local_cause``), then the fleet rule
   (``cause``), through :mod:`.attribute`. A fleet change marks the payments
   whose count of stores changed pending in turn. What is left stays pending
   for the next pass: the correlator may fall behind under extreme load, and
   catches up after;
4. opens, updates and closes incidents (:mod:`.incidents`), queueing alerts;
5. advances the cursor.

Because the cursor and the pending marks move in the same transaction as
everything derived from the events, a crash or a stop loses nothing and counts
nothing twice: a pass either committed whole or never happened.

A pass runs when ingest stored new events (the app calls the wake-up listener),
right after a pass that left work (events or payments pending; ingest jobs
queued meanwhile go first), and every :data:`TICK_S` seconds. Storage errors
are logged once when they start and once when they stop; the loop retries
with backoff and never dies of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from aiohttp import web

from ..settings import CollectorSettings
from ..storage import StorageError
from ..storage.sqlite import SqliteStorage
from .attribute import final_verdict, local_verdict
from .incidents import update_incidents
from .state import apply_events, read_events
from .txns import (
    Attribution,
    FinalFn,
    LocalFn,
    attribute,
    count_pending,
    mark_by_evidence,
    mark_fleet_changes,
    pending_keys,
    upsert_txns,
)

log = structlog.get_logger("collector.correlate")

#: Events read by the first pass; later passes adapt it to the time it took ...
BATCH_EVENTS: Final = 500
#: ... within these bounds.
MIN_EVENTS: Final = 50
MAX_EVENTS: Final = 5000
#: A pass decides pending payments until it has run this long (events, then payments).
PASS_BUDGET_S: Final = 0.05
#: Payments decided per chunk at first (then sized to the budget left by their cost) ...
FIRST_CHUNK: Final = 1
#: ... at most.
MAX_CHUNK: Final = 256
#: A pass runs at least this often (incidents close on the timer too).
TICK_S: Final = 5.0
#: Backoff after a failed pass: from this ...
RETRY_INITIAL_S: Final = 0.5
#: ... doubling up to this.
RETRY_MAX_S: Final = 30.0
CURSOR_NAME: Final = "main"


@dataclass(frozen=True, slots=True)
class PassResult:
    """What one pass did."""

    events: int
    last_rowid: int
    pending: int  # events stored after the new cursor
    pending_payments: int  # failed payments still to decide (first cause or revision)
    attributed: int
    first: int
    revised: int
    opened: int
    closed: int
    events_s: float = 0.0  # time spent reading and applying the events
    duration_s: float = 0.0  # the whole pass


def read_cursor(conn: sqlite3.Connection) -> int:
    row = conn.execute(
        "SELECT last_rowid FROM correlator_cursor WHERE name = ?", (CURSOR_NAME,)
    ).fetchone()
    return int(row[0]) if row is not None else 0


def _write_cursor(conn: sqlite3.Connection, rowid: int) -> None:
    conn.execute(
        "INSERT INTO correlator_cursor (name, last_rowid) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET last_rowid = excluded.last_rowid",
        (CURSOR_NAME, rowid),
    )


def pending_events(conn: sqlite3.Connection, cursor: int) -> int:
    """Events stored after ``cursor`` (rowids are dense: events are never deleted)."""
    row = conn.execute("SELECT max(rowid) FROM events").fetchone()
    return max(0, int(row[0] or 0) - cursor)


def run_pass(
    conn: sqlite3.Connection,
    settings: CollectorSettings,
    now: datetime,
    *,
    limit: int = BATCH_EVENTS,
    budget_s: float = PASS_BUDGET_S,
    local: LocalFn = local_verdict,
    final: FinalFn = final_verdict,
    clock: Callable[[], float] = time.perf_counter,
) -> PassResult:
    """One pass, inside the caller's transaction (the writer's write job)."""
    started = clock()
    a = settings.attribution
    cursor = read_cursor(conn)
    events = read_events(conn, cursor, limit)
    applied = apply_events(conn, events, a)
    upserted = upsert_txns(conn, events)
    mark_by_evidence(conn, applied.signals, a, now)
    mark_fleet_changes(conn, upserted.fleet, a, now)
    events_s = clock() - started
    done = Attribution()
    chunk = FIRST_CHUNK
    while True:
        keys = pending_keys(conn, chunk)
        if not keys:
            break
        began = clock()
        done.add(attribute(conn, keys, a, now, local, final, neighbours=False))
        spent = clock() - began
        each = spent / len(keys)
        left = budget_s - (clock() - started)
        if left < each:  # the next one would overrun the budget
            break
        chunk = max(1, min(MAX_CHUNK, int(left / each) if each > 0 else MAX_CHUNK))
    changes = update_incidents(
        conn,
        settings,
        now,
        payments=done.changed,
        devices=applied.devices,
        stores={ev.store_id for ev in events},
    )
    if events:
        cursor = events[-1].rowid
        _write_cursor(conn, cursor)
    return PassResult(
        events=len(events),
        last_rowid=cursor,
        pending=pending_events(conn, cursor),
        pending_payments=count_pending(conn),
        attributed=done.attributed,
        first=done.first,
        revised=done.revised,
        opened=len(changes.opened),
        closed=len(changes.closed),
        events_s=events_s,
        duration_s=clock() - started,
    )


class Correlator:
    """The loop and its status (``status()`` for the API, /metrics and tests)."""

    def __init__(self, storage: SqliteStorage, settings: CollectorSettings) -> None:
        self._storage = storage
        self._settings = settings
        self._wake = asyncio.Event()
        self._ingested = True  # the events stored before we started count as new
        self._running = False
        self._last: PassResult | None = None
        self._failing = False
        self.passes = 0
        self.failed_passes = 0
        #: events the next pass reads (adapted to the time the last full batch took)
        self.event_limit = BATCH_EVENTS
        self.last_pass_s = 0.0
        self.max_pass_s = 0.0
        self.attributed_total = 0
        self.revised_total = 0
        self.last_error: str | None = None
        #: called (on the loop) after a pass that opened or closed incidents, which
        #: queued their alerts: the alert worker's wake-up
        self.on_incidents: Callable[[], None] | None = None

    def wake(self) -> None:
        """Ingest stored new events (an app listener: called on the event loop)."""
        self._ingested = True
        self._wake.set()

    @property
    def idle(self) -> bool:
        """No work pending: nothing stored since the last pass began, which left no event and
        no payment to decide."""
        last = self._last
        return (
            last is not None
            and not self._running
            and not self._ingested
            and not self._failing
            and last.pending == 0
            and last.pending_payments == 0
        )

    def status(self) -> dict[str, Any]:
        last = self._last
        return {
            "idle": self.idle,
            "pending_events": last.pending if last is not None else 0,
            "pending_payments": last.pending_payments if last is not None else 0,
            "last_rowid": last.last_rowid if last is not None else 0,
            "attributed_total": self.attributed_total,
            "revised_total": self.revised_total,
            "passes": self.passes,
            "failed_passes": self.failed_passes,
            "event_limit": self.event_limit,
            "last_pass_ms": round(self.last_pass_s * 1000, 1),
            "max_pass_ms": round(self.max_pass_s * 1000, 1),
            "last_error": self.last_error,
        }

    async def one_pass(self) -> PassResult:
        """Run one pass now (the loop's step; raises StorageError)."""
        self._ingested = False
        self._running = True
        try:
            settings, limit = self._settings, self.event_limit
            result = await self._storage.writer.write(
                lambda conn: run_pass(conn, settings, datetime.now(UTC), limit=limit)
            )
        finally:
            self._running = False
        self._last = result
        self._adapt(result)
        self.passes += 1
        self.attributed_total += result.attributed
        self.revised_total += result.revised
        if (result.opened or result.closed) and self.on_incidents is not None:
            self.on_incidents()
        return result

    def _adapt(self, result: PassResult) -> None:
        """Size the next batch of events to half the pass budget, by this one's cost."""
        self.last_pass_s = result.duration_s
        self.max_pass_s = max(self.max_pass_s, result.duration_s)
        if result.events == 0 or result.events_s <= 0:
            return
        if result.events < self.event_limit and result.events_s < PASS_BUDGET_S / 2:
            return  # a short batch says little about a full one
        fit = int(self.event_limit * (PASS_BUDGET_S / 2) / result.events_s)
        # move gradually: one slow pass (a page fault, a busy CPU) does not collapse it
        fit = max(self.event_limit // 2, min(self.event_limit * 2, fit))
        self.event_limit = max(MIN_EVENTS, min(MAX_EVENTS, fit))

    async def run(self) -> None:
        """Pass after pass until cancelled."""
        delay = RETRY_INITIAL_S
        while True:
            try:
                result = await self.one_pass()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # StorageError, or a bug: never let the loop die
                self.failed_passes += 1
                self.last_error = str(err) or type(err).__name__
                if not self._failing:
                    self._failing = True
                    if isinstance(err, StorageError):
                        log.error("correlator_failing", error=self.last_error)
                    else:
                        log.exception("correlator_failing", error=self.last_error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = RETRY_INITIAL_S
            if self._failing:
                self._failing = False
                self.last_error = None
                log.info("correlator_recovered", last_rowid=result.last_rowid)
            if result.pending > 0 or result.pending_payments > 0:
                await asyncio.sleep(0)  # ingest queued meanwhile goes first (FIFO writer)
                continue
            self._wake.clear()
            if self._ingested:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await self._wake.wait()


CORRELATOR_KEY: Final = web.AppKey("correlator", Correlator)


async def _correlator_ctx(app: web.Application) -> AsyncIterator[None]:
    from ..app import STORAGE_KEY

    storage = app[STORAGE_KEY]
    correlator = app.get(CORRELATOR_KEY)
    if correlator is None or not isinstance(storage, SqliteStorage):
        yield
        return
    task = asyncio.create_task(correlator.run(), name="correlator")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def setup(app: web.Application) -> None:
    """Start the correlator with the app (after the storage opened) and wake it on ingest."""
    from ..app import LISTENERS_KEY, SETTINGS_KEY, STORAGE_KEY

    storage = app[STORAGE_KEY]
    if not isinstance(storage, SqliteStorage):
        log.warning("correlator_unavailable", reason="only the SQLite storage is supported")
        return
    correlator = Correlator(storage, app[SETTINGS_KEY])

    def wake_alerts() -> None:
        from ..alerts import ALERTS_KEY  # set up after us

        worker = app.get(ALERTS_KEY)
        if worker is not None:
            worker.wake()

    correlator.on_incidents = wake_alerts
    app[CORRELATOR_KEY] = correlator
    app[LISTENERS_KEY].append(correlator.wake)
    app.cleanup_ctx.append(_correlator_ctx)
