"""Every payment report goes through here: the local API, log files, timeouts.

:class:`Payments` validates a report (:mod:`.fields`, the PAN guard first),
lets the :class:`~.book.Book` decide what it means, and makes the outcome
durable in the spool — the ``txn`` events, the payment's row in the book's
table, the counters and the caller's checkpoint (a log file's offset) — in ONE
SQLite transaction, before it answers. After a crash either all of a report
is stored or none of it.

Reports that arrive while a transaction is being written wait and go
together in the next one (group commit): one fsync for many payments, so
intake keeps up with far more than any till, and every caller still hears
back only once its report is durable.

A timer records every payment that stays open past ``timeout_s`` as a
``timeout`` in doubt. The deadline is stored with the payment, so an agent
killed while a payment is open times it out after its restart.

Errors::

    PaymentError (agent.payments.fields)
        400  bad field (named), 422 card data, 404 unknown payment,
        409 conflict, 503 the spool cannot store it
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import orjson
import structlog

from protocol import Event, ProtocolError, format_datetime

from ..spool import PaymentRow, Spool, SpoolError
from .book import Book, Change, Payment
from .fields import Guard, PaymentError, Submission, parse_resolution, parse_submission
from .settings import PaymentsSettings

log = structlog.get_logger("posmon.payments")
T = TypeVar("T")

SpoolCall = Callable[[Callable[[Spool], T]], Awaitable[T]]

#: The most reports one transaction takes.
MAX_BATCH: Final = 1000
#: How often ended payments past their keeping time are forgotten.
PRUNE_EVERY_S: Final = 600.0
#: After a failed timeout write, try again this much later.
RETRY_S: Final = 1.0
#: The spool's meta keys of the durable counters.
COUNT_PREFIX: Final = "payments.count."
#: Status lists at most this many payments in doubt (the oldest).
STATUS_IN_DOUBT_MAX: Final = 50
#: Distinct sources counted in the status (log files are few; the API is one).
MAX_SOURCES: Final = 64

Compute = Callable[[Book, float], list[Change]]


@dataclass(slots=True)
class _Job:
    compute: Compute
    meta: Mapping[str, str]
    future: asyncio.Future[list[Change]]


@dataclass(slots=True)
class _SourceCounts:
    accepted: int = 0
    refused: int = 0


@dataclass(slots=True)
class _Failing:
    failing: bool = False
    last_error: str | None = None


class Payments:
    """The payment intake of one agent (``agent.payments``)."""

    def __init__(
        self,
        settings: PaymentsSettings,
        spool_call: SpoolCall[Any],
        *,
        after_write: Callable[[Sequence[Event]], Awaitable[None]] | None = None,
        guard: Guard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if guard is None:
            from ..pan_guard import GUARD

            guard = GUARD
        self.settings = settings
        self.book = Book(timeout_s=settings.timeout_s, technical_codes=settings.technical_codes)
        self._spool_call = spool_call
        self._after_write = after_write
        self._guard = guard
        self._clock = clock
        self._queue: list[_Job] = []
        self._drainer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._counts: dict[str, int] = {}
        self._sources: dict[str, _SourceCounts] = {}
        self._spool = _Failing()
        self.loaded = False

    # -- life cycle -------------------------------------------------------

    async def load(self) -> None:
        """Read the book and the counters from the spool (once, at start)."""
        rows, counts = await self._spool_call(
            lambda s: (s.payment_rows(), s.meta_items(COUNT_PREFIX))
        )
        for row in rows:
            self.book.apply(_change_from_row(row))
        self._counts = {k.removeprefix(COUNT_PREFIX): int(v) for k, v in counts.items()}
        self.loaded = True
        if self.book.open_count():
            log.info("payments_open_at_start", open=self.book.open_count())

    async def run(self, stop: asyncio.Event) -> None:
        """Record timeouts when they fall due, and forget old payments, until ``stop``."""
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while not stop.is_set():
            if loop.time() >= next_prune:
                with contextlib.suppress(PaymentError):
                    await self._run(lambda book, now: _forget(book, now), {})
                next_prune = loop.time() + PRUNE_EVERY_S
            deadline = self.book.next_deadline()
            wait = PRUNE_EVERY_S if deadline is None else deadline - self._clock()
            wait = min(wait, next_prune - loop.time())
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_first(stop.wait(), self._wake.wait()), wait)
                continue
            try:
                changes = await self._run(lambda book, now: book.expire(now), {})
            except PaymentError:
                await _sleep_or_stop(stop, RETRY_S)
                continue
            for change in changes:
                after = change.after
                assert after is not None
                log.warning(
                    "payment_timeout",
                    txn_id=change.txn_id,
                    acquirer=after.values.get("acquirer"),
                    timeout_s=self.settings.timeout_s,
                    in_doubt=True,
                )

    async def close(self) -> None:
        """Wait for reports already taken in to be written."""
        while self._drainer is not None and not self._drainer.done():
            await asyncio.shield(self._drainer)

    # -- the entry points -------------------------------------------------

    async def submit(
        self,
        data: Mapping[str, object],
        *,
        source: str,
        checkpoint: Mapping[str, str] | None = None,
    ) -> str:
        """Validate (PAN guard first: forbidden field names → 422; card numbers in text
        fields masked), apply a start, an end, or both, and make it durable in the
        spool — with ``checkpoint`` (meta key → value, e.g. a log file's offset)
        written in the same SQLite transaction. Returns what happened: ``started``,
        ``updated``, ``ended``, ``late_end`` or ``duplicate`` (the checkpoint is
        committed all the same). Raises :class:`PaymentError` with nothing stored."""
        counts = self._source(source)
        try:
            sub = parse_submission(data, self._guard)
        except PaymentError:
            counts.refused += 1
            raise
        try:
            changes = await self._run(_submit(sub), checkpoint or {})
        except PaymentError as err:
            if err.status != 503:
                counts.refused += 1
            raise
        counts.accepted += 1
        change = changes[-1]
        if change.result == "late_end":
            assert change.after is not None
            log.info(
                "payment_late_end",
                txn_id=sub.txn_id,
                outcome=change.after.outcome,
                in_doubt=change.after.state == "in_doubt",
            )
        return change.result

    async def resolve(self, txn_id: str, resolution: str, *, source: str) -> str:
        """Clear a payment in doubt (``reversed``, ``charged`` or ``not_charged``):
        ``resolved``, or ``duplicate`` for the same resolution again. Raises
        :class:`PaymentError` 404 for an unknown txn_id, 409 if it is not in doubt."""
        counts = self._source(source)
        try:
            txn_id, resolution = parse_resolution(
                {"txn_id": txn_id, "resolution": resolution}, self._guard
            )
            changes = await self._run(lambda book, now: [book.resolve(txn_id, resolution, now)], {})
        except PaymentError as err:
            if err.status != 503:
                counts.refused += 1
            raise
        counts.accepted += 1
        if changes[-1].result == "resolved":
            log.info("payment_resolved", txn_id=txn_id, resolution=resolution)
        return changes[-1].result

    async def resolve_request(self, data: Mapping[str, object], *, source: str) -> str:
        """:meth:`resolve` from a request body ``{txn_id, resolution}``."""
        try:
            txn_id, resolution = parse_resolution(data, self._guard)
        except PaymentError:
            self._source(source).refused += 1
            raise
        return await self.resolve(txn_id, resolution, source=source)

    async def commit_checkpoint(self, checkpoint: Mapping[str, str]) -> None:
        """Store a checkpoint alone (e.g. after a log line that held no payment),
        in order with the reports before it."""
        await self._run(lambda book, now: [], checkpoint)

    # -- status -----------------------------------------------------------

    def status_json(self) -> dict[str, Any]:
        in_doubt = self.book.in_doubt()
        counts = {k: self._counts.get(k, 0) for k in ("approved", "declined", "timeout", "error")}
        counts.update({k: self._counts.get(k, 0) for k in ("late", "resolved", "technical")})
        return {
            "timeout_s": self.settings.timeout_s,
            "counts": counts,
            "open": self.book.open_count(),
            "in_doubt_total": len(in_doubt),
            "in_doubt": [_doubt_json(p) for p in in_doubt[:STATUS_IN_DOUBT_MAX]],
            "sources": {
                name: {"accepted": c.accepted, "refused": c.refused}
                for name, c in sorted(self._sources.items())
            },
            "spool_error": self._spool.last_error if self._spool.failing else None,
        }

    # -- group commit -----------------------------------------------------

    def _source(self, source: str) -> _SourceCounts:
        counts = self._sources.get(source)
        if counts is None:
            if len(self._sources) >= MAX_SOURCES:
                source = "other"
            counts = self._sources.setdefault(source, _SourceCounts())
        return counts

    async def _run(self, compute: Compute, meta: Mapping[str, str]) -> list[Change]:
        loop = asyncio.get_running_loop()
        job = _Job(compute, dict(meta), loop.create_future())
        self._queue.append(job)
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain(), name="payments-writer")
        return await job.future

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[:MAX_BATCH]
            del self._queue[:MAX_BATCH]
            await self._write(batch)

    async def _write(self, batch: list[_Job]) -> None:
        now = self._clock()
        applied: list[Change] = []
        taken: list[tuple[_Job, list[Change]]] = []
        meta: dict[str, str] = {}
        for job in batch:
            try:
                changes = job.compute(self.book, now)
            except PaymentError as err:
                _fail(job, err)
                continue
            except ProtocolError as err:  # a value the wire format cannot carry
                _fail(job, PaymentError(err.field, str(err)))
                continue
            except Exception as err:  # never leave a caller waiting forever
                _fail(job, err)
                continue
            for change in changes:
                self.book.apply(change)
                applied.append(change)
            meta.update(job.meta)
            taken.append((job, changes))
        stored = [c for c in applied if c.stores]
        events = [event for c in stored for event in c.events]
        bump: dict[str, int] = {}
        for change in stored:
            for key, n in change.counts.items():
                bump[key] = bump.get(key, 0) + n
        try:
            if events or stored or meta:
                await self._store(stored, events, bump, meta)
        except Exception as err:
            # Not stored: take the changes back; the callers hear why.
            for change in reversed(applied):
                self.book.undo(change)
            if isinstance(err, SpoolError):
                if not self._spool.failing:
                    log.error("payments_write_failed", error=str(err))
                self._spool = _Failing(True, str(err))
                err = PaymentError(None, f"the spool cannot store it now: {err}", status=503)
            else:
                log.error("payments_write_failed", error=repr(err))
            for job, _ in taken:
                _fail(job, err)
            return
        if self._spool.failing:
            log.info("payments_write_recovered")
            self._spool = _Failing()
        for key, n in bump.items():
            self._counts[key] = self._counts.get(key, 0) + n
        for job, changes in taken:
            if not job.future.done():
                job.future.set_result(changes)
        if any(c.after is not None and c.after.state == "open" for c in stored):
            self._wake.set()
        if events and self._after_write is not None:
            try:
                await self._after_write(events)
            except Exception as err:  # the payments are stored; only the follow-up failed
                log.error("payments_after_write_failed", error=repr(err))

    async def _store(
        self,
        stored: Sequence[Change],
        events: Sequence[Event],
        bump: Mapping[str, int],
        meta: Mapping[str, str],
    ) -> None:
        """One transaction: the events, each payment's last row, counters, checkpoints."""
        rows: dict[str, PaymentRow | None] = {}
        for change in stored:
            rows[change.txn_id] = None if change.after is None else _row(change.after)
        puts = [r for r in rows.values() if r is not None]
        forget = [t for t, r in rows.items() if r is None]
        prefixed = {COUNT_PREFIX + k: n for k, n in bump.items()}
        await self._spool_call(
            lambda s: s.append_with(events, meta=meta, bump=prefixed, payments=puts, forget=forget)
        )


def _submit(sub: Submission) -> Compute:
    return lambda book, now: [book.submit(sub, now)]


def _forget(book: Book, now: float) -> list[Change]:
    changes = []
    for txn_id in book.stale(now):
        before = book.get(txn_id)
        changes.append(Change(txn_id, "forgotten", before, None))
    return changes


def _fail(job: _Job, err: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(err)


def _row(payment: Payment) -> PaymentRow:
    return PaymentRow(
        txn_id=payment.txn_id,
        state=payment.state,
        received_at=payment.received_at,
        updated_at=payment.updated_at,
        body=orjson.dumps(payment.to_json()),
    )


def _change_from_row(row: PaymentRow) -> Change:
    payment = Payment.from_json(orjson.loads(row.body))
    return Change(payment.txn_id, "loaded", None, payment)


def offline_status(bodies: Sequence[bytes], counts: Mapping[str, str]) -> dict[str, Any]:
    """What :meth:`Payments.status_json` says of counts and payments in doubt, from
    the spool file of an agent that is not running: the ``body`` of its
    ``payments`` rows in doubt and its ``meta`` counters."""
    doubts = sorted(
        (Payment.from_json(orjson.loads(body)) for body in bodies),
        key=lambda p: (p.received_at, p.txn_id),
    )
    numbers = {k.removeprefix(COUNT_PREFIX): int(v) for k, v in counts.items()}
    names = ("approved", "declined", "timeout", "error", "late", "resolved", "technical")
    return {
        "counts": {name: numbers.get(name, 0) for name in names},
        "in_doubt_total": len(doubts),
        "in_doubt": [_doubt_json(p) for p in doubts[:STATUS_IN_DOUBT_MAX]],
    }


def _doubt_json(payment: Payment) -> dict[str, Any]:
    v = payment.values
    return {
        "txn_id": payment.txn_id,
        "started_at": v.get("started_at"),
        "acquirer": v.get("acquirer"),
        "amount_minor": v.get("amount_minor"),
        "currency": v.get("currency"),
        "outcome": payment.outcome,
        "since": format_datetime(datetime.fromtimestamp(payment.updated_at, UTC)),
    }


async def _first(*waits: Awaitable[Any]) -> None:
    """Return when the first of ``waits`` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
