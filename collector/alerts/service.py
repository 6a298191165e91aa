"""The delivery worker: sends the outbox's due alerts and records every attempt.

One task, started with the app (after the storage), runs rounds:

1. give up rows queued longer than ``give_up_after_s`` ago (logged, counted);
2. read the due rows (``next_attempt_at`` passed, not delivered, not given up,
   and no earlier row of the same incident and channel still waiting);
3. deliver them, the channels side by side, each channel's rows in order. A
   delivered row gets ``delivered_at``; a refused one ``gave_up_at`` at once;
   a failed one ``attempts + 1``, ``last_error`` and a ``next_attempt_at``
   after :func:`~.delivery.backoff_s` (never past its give-up time). After a
   retryable failure the channel pauses until that row is due again, so a
   receiver that is down gets one attempt per backoff step, not one per row.

Between rounds it sleeps until the next row is due, at most :data:`POLL_S`
(rows another process queued are picked up by then), or until :meth:`wake`
(the correlator calls it after queuing alerts). Delivery is at least once: an
alert in flight when the collector stops is sent again after the restart.

Logged on change of state only: a channel starts failing
(``alert_delivery_failing``, once) or recovers (``alert_delivery_recovered``);
an alert is delivered (``alert_delivered``) or given up (``alert_given_up``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

import structlog

from ..settings import AlertSettings
from ..storage import StorageError
from ..storage.sqlite_writer import SqliteWriter
from . import outbox
from .delivery import DeliveryError, Sender, backoff_s
from .outbox import Alert

log = structlog.get_logger("collector.alerts")

#: the longest sleep between rounds (picks up rows queued without a wake-up)
POLL_S: Final = 5.0
#: at most this many rows per round
BATCH: Final = 100
_MIN_SLEEP_S: Final = 0.01


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class AlertCounters:
    """What the worker did since start-up, per channel (``/metrics`` may show them)."""

    delivered: dict[str, int] = field(default_factory=dict)
    #: failed attempts that will be retried
    failed_attempts: dict[str, int] = field(default_factory=dict)
    gave_up: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def bump(counter: dict[str, int], channel: str) -> None:
        counter[channel] = counter.get(channel, 0) + 1


class AlertWorker:
    """Delivers the alert outbox through the configured channels."""

    def __init__(
        self,
        settings: AlertSettings,
        senders: Mapping[str, Sender],
        *,
        clock: Callable[[], datetime] = _now,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.senders = dict(senders)
        self.counters = AlertCounters()
        self._clock = clock
        self._rand = rand
        self._wake = asyncio.Event()
        self._writer: SqliteWriter | None = None
        #: channel -> do not attempt before (after a retryable failure)
        self._hold: dict[str, datetime] = {}
        self._failing: set[str] = set()
        self._storage_failing = False
        self._round_lock = asyncio.Lock()  # one round at a time: a row is sent once per round

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.senders)

    def wake(self) -> None:
        """Look at the outbox now (call on the event loop after queuing alerts)."""
        self._wake.set()

    async def start(self, writer: SqliteWriter) -> None:
        self._writer = writer
        for sender in self.senders.values():
            await sender.start()

    async def close(self) -> None:
        for sender in self.senders.values():
            await sender.close()

    async def run(self) -> None:
        """Rounds until cancelled."""
        while True:
            self._wake.clear()  # a wake-up during the round triggers the next one at once
            try:
                sleep_s = await self.round()
            except StorageError as err:
                if not self._storage_failing:
                    self._storage_failing = True
                    log.error("alert_outbox_unavailable", error=str(err))
                sleep_s = POLL_S
            else:
                if self._storage_failing:
                    self._storage_failing = False
                    log.info("alert_outbox_available")
            try:
                async with asyncio.timeout(sleep_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def round(self) -> float:
        """One pass over the outbox; returns how long to sleep before the next."""
        async with self._round_lock:
            return await self._round()

    async def _round(self) -> float:
        writer = self._require_writer()
        now = self._clock()
        give_up_s = self.settings.give_up_after_s
        for row in await writer.write(lambda conn: outbox.expire(conn, now, give_up_s)):
            self.counters.bump(self.counters.gave_up, row.channel)
            log.warning(
                "alert_given_up",
                alert_id=row.id,
                incident_id=row.incident_id,
                transition=row.transition,
                channel=row.channel,
                attempts=row.attempts,
                reason=f"not delivered within {give_up_s:g} s",
                error=row.last_error,
            )
        ready = tuple(ch for ch in self.channels if self._hold.get(ch, now) <= now)
        rows = await writer.read(lambda conn: outbox.due(conn, ready, now, BATCH))
        by_channel: dict[str, list[Alert]] = {}
        for alert in rows:
            by_channel.setdefault(alert.channel, []).append(alert)
        await asyncio.gather(*(self._deliver_all(ch, alerts) for ch, alerts in by_channel.items()))
        if len(rows) == BATCH:
            return _MIN_SLEEP_S
        return await self._sleep_s()

    async def _sleep_s(self) -> float:
        writer = self._require_writer()
        channels = self.channels
        due = await writer.read(lambda conn: outbox.next_due(conn, channels))
        now = self._clock()
        wait = POLL_S
        for channel, at in due.items():
            hold = self._hold.get(channel)
            start = max(at, hold) if hold is not None else at
            wait = min(wait, (start - now).total_seconds())
        return max(wait, _MIN_SLEEP_S)

    def _require_writer(self) -> SqliteWriter:
        if self._writer is None:
            raise RuntimeError("AlertWorker used before start()")
        return self._writer

    async def _deliver_all(self, channel: str, alerts: list[Alert]) -> None:
        for alert in alerts:
            if not await self._deliver(self.senders[channel], alert):
                return  # the channel is failing: the rest wait for the next round

    async def _deliver(self, sender: Sender, alert: Alert) -> bool:
        """One attempt; False when the channel should pause."""
        writer = self._require_writer()
        try:
            note = await sender.send(alert)
        except DeliveryError as err:
            error = err
        except Exception as err:  # a bug must not stop the worker; it is retried like an outage
            log.exception("alert_send_crashed", channel=alert.channel, alert_id=alert.id)
            error = DeliveryError(f"internal error: {type(err).__name__}: {err}", retry=True)
        else:
            now = self._clock()
            await writer.write(lambda conn: outbox.record_delivered(conn, alert.id, now, note))
            self.counters.bump(self.counters.delivered, alert.channel)
            self._recovered(alert.channel)
            log.info(
                "alert_delivered",
                alert_id=alert.id,
                incident_id=alert.incident_id,
                transition=alert.transition,
                channel=alert.channel,
                attempts=alert.attempts + 1,
            )
            if note is not None:
                log.warning(
                    "alert_partly_refused", alert_id=alert.id, channel=alert.channel, note=note
                )
            return True
        now = self._clock()
        if not error.retry:
            await writer.write(
                lambda conn: outbox.record_gave_up(conn, alert.id, error.message, now)
            )
            self.counters.bump(self.counters.gave_up, alert.channel)
            log.error(
                "alert_given_up",
                alert_id=alert.id,
                incident_id=alert.incident_id,
                transition=alert.transition,
                channel=alert.channel,
                attempts=alert.attempts + 1,
                reason="the receiver refused it",
                error=error.message,
            )
            return True
        next_at = self._next_attempt(alert, error, now)
        await writer.write(lambda conn: outbox.record_retry(conn, alert.id, error.message, next_at))
        self.counters.bump(self.counters.failed_attempts, alert.channel)
        self._hold[alert.channel] = next_at
        if alert.channel not in self._failing:
            self._failing.add(alert.channel)
            log.warning(
                "alert_delivery_failing",
                channel=alert.channel,
                error=error.message,
                retry_in_s=round((next_at - now).total_seconds(), 3),
            )
        return False

    def _next_attempt(self, alert: Alert, error: DeliveryError, now: datetime) -> datetime:
        s = self.settings
        delay = backoff_s(alert.attempts + 1, s.retry_initial_s, s.retry_max_s, self._rand)
        if error.retry_after_s is not None:
            delay = min(max(delay, error.retry_after_s), s.retry_max_s)
        deadline = alert.created_at + timedelta(seconds=s.give_up_after_s)
        return max(now, min(now + timedelta(seconds=delay), deadline))

    def _recovered(self, channel: str) -> None:
        self._hold.pop(channel, None)
        if channel in self._failing:
            self._failing.discard(channel)
            log.info("alert_delivery_recovered", channel=channel)
