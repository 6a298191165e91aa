"""The correlator: a background task in the collector that follows the ``events`` table.

Each *pass* is ONE write job on the storage's writer thread (one transaction):

1. read up to :data:`BATCH_EVENTS` events after the cursor (``events.rowid``),
   in insertion order;
2. bring the current-state tables up to them (:mod:`.state`) and the payments
   (:mod:`.txns`);
3. pick the failed payments that need a (new) cause — new or changed ones, and
   those whose time window the new evidence falls in (within
   ``revise_horizon_s``) — and attribute them: first this store's verdict
   for all (``local_cause``), then the fleet rule (``cause``), through
   :mod:`.attribute`;
4. open, update and close incidents (:mod:`.incidents`), queueing alerts;
5. advance the cursor.

Because the cursor moves in the same transaction as everything derived from
the events, a crash or a stop loses nothing and counts nothing twice: a pass
either committed whole or never happened.

A pass runs when ingest stored new events (the app calls the wake-up listener),
right after a pass that filled its batch, and every :data:`TICK_S` seconds.
Storage errors are logged once when they start and once when they stop; the
loop retries with backoff and never dies of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
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
from .txns import FinalFn, LocalFn, attribute, dirty_by_evidence, upsert_txns

log = structlog.get_logger("collector.correlate")

#: Events read by one pass (one transaction on the writer).
BATCH_EVENTS: Final = 2000
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
    attributed: int
    first: int
    revised: int
    opened: int
    closed: int


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
    local: LocalFn = local_verdict,
    final: FinalFn = final_verdict,
) -> PassResult:
    """One pass, inside the caller's transaction (the writer's write job)."""
    cursor = read_cursor(conn)
    events = read_events(conn, cursor, limit)
    devices = apply_events(conn, events, settings.attribution)
    dirty = upsert_txns(conn, events)
    dirty |= dirty_by_evidence(conn, events, settings.attribution, now)
    done = attribute(conn, dirty, settings.attribution, now, local, final)
    changes = update_incidents(
        conn,
        settings,
        now,
        payments=done.changed,
        devices=devices,
        stores={ev.store_id for ev in events},
    )
    if events:
        cursor = events[-1].rowid
        _write_cursor(conn, cursor)
    return PassResult(
        events=len(events),
        last_rowid=cursor,
        pending=pending_events(conn, cursor),
        attributed=done.attributed,
        first=done.first,
        revised=done.revised,
        opened=len(changes.opened),
        closed=len(changes.closed),
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
        """No work pending: nothing stored since the last pass began, which left nothing."""
        last = self._last
        return (
            last is not None
            and not self._running
            and not self._ingested
            and not self._failing
            and last.pending == 0
        )

    def status(self) -> dict[str, Any]:
        last = self._last
        return {
            "idle": self.idle,
            "pending_events": last.pending if last is not None else 0,
            "last_rowid": last.last_rowid if last is not None else 0,
            "attributed_total": self.attributed_total,
            "revised_total": self.revised_total,
            "passes": self.passes,
            "failed_passes": self.failed_passes,
            "last_error": self.last_error,
        }

    async def one_pass(self) -> PassResult:
        """Run one pass now (the loop's step; raises StorageError)."""
        self._ingested = False
        self._running = True
        try:
            settings = self._settings
            result = await self._storage.writer.write(
                lambda conn: run_pass(conn, settings, datetime.now(UTC))
            )
        finally:
            self._running = False
        self._last = result
        self.passes += 1
        self.attributed_total += result.attributed
        self.revised_total += result.revised
        if (result.opened or result.closed) and self.on_incidents is not None:
            self.on_incidents()
        return result

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
            if result.pending > 0:
                await asyncio.sleep(0)  # let ingest in between batches
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
