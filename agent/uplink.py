"""The uplink: moves events from the spool to the collector, losing nothing.

One loop: take the oldest batch (bounded in events and bytes), send it
gzip-compressed with the agent's bearer token, with the number of events
still queued behind it (the report's ``backlog``), and delete from the spool
only the seqs the collector acknowledged. What the collector answers
decides what happens next (DESIGN.md, reliability rules):

======================  ====================================================
200                     delete the acknowledged seqs; send the next batch now
400 / 415 / 422         the batch is malformed: quarantine it (only the one
                        event when the error names ``events[i]``), go on
401 / 403               the token or terminal is wrong: log it once, stop
                        sending; look again every ``backoff_max_s``
413                     too large: halve the batch; a single event that is
                        still too large is quarantined
429, 5xx, other 4xx,    back off exponentially with full jitter, capped;
network errors          ``Retry-After`` is honoured (capped)
======================  ====================================================

All scheduling uses the event loop's monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import structlog

from protocol import AgentInfo, ProtocolError, decode_ack, encode_report_raw, gzip_body

from .config import CollectorLinkSettings, UplinkSettings
from .http import HttpError, Poster
from .spool import Batch, Spool

log = structlog.get_logger("posmon.agent.uplink")

T = TypeVar("T")
SpoolCall = Callable[[Callable[[Spool], T]], Awaitable[T]]

REPORTS_PATH = "/api/v1/reports"
_EVENT_FIELD = re.compile(r"^events\[(\d+)\]")

UplinkState = Literal["starting", "ok", "backoff", "unauthorized"]


@dataclass(slots=True)
class UplinkStatus:
    """What ``posmon-agent status`` shows about uploads."""

    state: UplinkState = "starting"
    last_upload_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    uploaded_events: int = 0
    uploads: int = 0
    quarantined_events: int = 0
    consecutive_failures: int = 0

    def to_json(self) -> dict[str, Any]:
        def iso(ts: float | None) -> str | None:
            return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()

        return {
            "state": self.state,
            "last_upload_at": iso(self.last_upload_at),
            "last_error": self.last_error,
            "last_error_at": iso(self.last_error_at),
            "uploaded_events": self.uploaded_events,
            "uploads": self.uploads,
            "quarantined_events": self.quarantined_events,
            "consecutive_failures": self.consecutive_failures,
        }


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base·2ⁿ))``."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * 2.0 ** min(self.attempt, 62))
        self.attempt += 1
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt to send a batch leads to."""

    wait_s: float  # 0: go on at once
    shrink_to: int | None = None  # 413: the next batch's event limit


class Uplink:
    """Sends the spool's contents to the collector until told to stop."""

    def __init__(
        self,
        link: CollectorLinkSettings,
        settings: UplinkSettings,
        agent: AgentInfo,
        spool_call: SpoolCall[Any],
    ) -> None:
        self.link = link
        self.settings = settings
        self.agent = agent
        self._spool = spool_call
        self.status = UplinkStatus()
        self.backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        self._wake = asyncio.Event()
        self._batch_limit = settings.batch_max_events
        self._poster: Poster | None = None
        self._http: ThreadPoolExecutor | None = None

    def wake(self) -> None:
        """Send now rather than at the next interval (new events, or shutdown)."""
        self._wake.set()

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        """A kept-alive connection to the collector for :meth:`send_once`.

        Requests block, so they run on a worker thread of their own: a slow
        collector never holds up the event loop or the spool.
        """
        poster = Poster(self.link.url, timeout_s=self.link.timeout_s, ca_file=self.link.ca_file)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uplink")
        self._poster, self._http = poster, executor
        try:
            yield
        finally:
            self._poster = self._http = None
            executor.submit(poster.close)
            executor.shutdown(wait=False)

    async def run(self, stop: asyncio.Event) -> None:
        async with self.connected():
            while not stop.is_set():
                outcome = await self.send_once()
                if outcome is None:  # the spool is empty
                    await self._sleep(self.settings.interval_s, stop, wakeable=True)
                elif outcome.wait_s > 0:
                    await self._sleep(outcome.wait_s, stop, wakeable=False)

    async def flush(self, deadline_s: float) -> None:
        """Best effort at shutdown: send what fits before the deadline."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        async with self.connected():
            if self._poster is not None:
                self._poster.timeout_s = min(self.link.timeout_s, deadline_s)
            while loop.time() < end and self.status.state != "unauthorized":
                try:
                    outcome = await asyncio.wait_for(self.send_once(), end - loop.time())
                except TimeoutError:
                    break
                if outcome is None or outcome.wait_s > 0:
                    break

    async def send_once(self) -> Outcome | None:
        """Send the oldest batch once; ``None`` when there was nothing to send."""
        limit, max_bytes = self._batch_limit, self.settings.batch_max_bytes
        batch: Batch = await self._spool(lambda s: s.peek(limit, max_bytes))
        if not batch:
            # A limit learnt from a 413 holds until the backlog is gone.
            self._batch_limit = self.settings.batch_max_events
            return None
        outcome = await self._send(batch)
        if outcome.shrink_to is not None:
            self._batch_limit = outcome.shrink_to
        return outcome

    async def _send(self, batch: Batch) -> Outcome:
        raw = encode_report_raw(
            self.agent, datetime.now(UTC), batch.bodies, backlog=batch.remaining
        )
        body = gzip_body(raw)
        headers = {
            "Authorization": f"Bearer {self.link.token}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        }
        if self._poster is None or self._http is None:
            raise RuntimeError("send_once() needs `async with uplink.connected()`")
        poster = self._poster
        loop = asyncio.get_running_loop()
        try:
            resp = await loop.run_in_executor(self._http, poster.post, REPORTS_PATH, body, headers)
        except HttpError as err:
            return self._failed(f"collector unreachable: {err}")
        status, payload, retry_after = resp.status, resp.body, resp.retry_after
        if status == 200:
            return await self._acknowledged(batch, payload)
        error, field = _error_of(payload)
        if status in (401, 403):
            return self._unauthorized(status, error)
        if status == 413:
            return await self._too_large(batch, error)
        if status in (400, 415, 422):
            return await self._malformed(batch, status, error, field)
        outcome = self._failed(f"collector answered {status}: {error}")
        if status == 429 and retry_after is not None:
            try:
                return Outcome(wait_s=min(float(retry_after), self.settings.backoff_max_s))
            except ValueError:
                pass
        return outcome

    async def _acknowledged(self, batch: Batch, payload: bytes) -> Outcome:
        try:
            ack = decode_ack(payload)
        except ProtocolError as err:
            return self._failed(f"collector sent an unreadable acknowledgement: {err}")
        sent = set(batch.seqs)
        acked = [seq for seq in ack.acked if seq in sent]
        removed = await self._spool(lambda s: s.ack(acked))
        self.status.uploads += 1
        self.status.uploaded_events += removed
        self.status.last_upload_at = time.time()
        self.backoff.reset()
        if self.status.state != "ok":
            log.info("uplink_ok", events=removed, previous=self.status.state)
        self.status.state = "ok"
        self.status.consecutive_failures = 0
        if len(acked) < len(batch):
            # The collector kept some back; do not spin on them.
            return self._failed(f"collector acknowledged {len(acked)} of {len(batch)} events")
        return Outcome(wait_s=0)

    def _failed(self, reason: str) -> Outcome:
        self._note_error(reason)
        self.status.consecutive_failures += 1
        if self.status.state != "backoff":
            log.warning("uplink_backoff", reason=reason)
        self.status.state = "backoff"
        return Outcome(wait_s=self.backoff.next_delay())

    def _unauthorized(self, status: int, error: str) -> Outcome:
        self._note_error(f"collector refused the token ({status}): {error}")
        if self.status.state != "unauthorized":
            log.error(
                "uplink_unauthorized",
                status=status,
                error=error,
                hint="check collector.token / token_file and agent.terminal_id / store_id",
            )
        self.status.state = "unauthorized"
        return Outcome(wait_s=self.settings.backoff_max_s)

    async def _too_large(self, batch: Batch, error: str) -> Outcome:
        if len(batch) > 1:
            return Outcome(wait_s=0, shrink_to=max(1, len(batch) // 2))
        return await self._quarantine(batch.seqs, 413, f"too large even alone: {error}")

    async def _malformed(self, batch: Batch, status: int, error: str, field: str | None) -> Outcome:
        match = _EVENT_FIELD.match(field or "")
        seqs = batch.seqs
        if match is not None and int(match.group(1)) < len(batch):
            seqs = (batch.seqs[int(match.group(1))],)
        return await self._quarantine(seqs, status, f"{error} (field {field})")

    async def _quarantine(self, seqs: tuple[int, ...], status: int, reason: str) -> Outcome:
        moved = await self._spool(lambda s: s.quarantine(seqs, status=status, reason=reason))
        self.status.quarantined_events += moved
        self._note_error(f"collector rejected {len(seqs)} events ({status}): {reason}")
        log.error("uplink_quarantined", events=moved, status=status, reason=reason)
        return Outcome(wait_s=0)

    def _note_error(self, reason: str) -> None:
        self.status.last_error = reason
        self.status.last_error_at = time.time()

    async def _sleep(self, seconds: float, stop: asyncio.Event, *, wakeable: bool) -> None:
        waiters = [asyncio.ensure_future(stop.wait())]
        if wakeable:
            waiters.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            self._wake.clear()


def _error_of(payload: bytes) -> tuple[str, str | None]:
    """The collector's error message and field, from its JSON error body."""
    try:
        data = json.loads(payload)
    except ValueError:
        return payload[:200].decode("utf-8", "replace"), None
    if not isinstance(data, dict):
        return str(data)[:200], None
    field = data.get("field")
    return str(data.get("error", ""))[:500], field if isinstance(field, str) else None
