"""One ``[[logfile]]``: its lines → the PAN guard → the rules → payment reports.

:class:`LogTail` reads complete lines from a :class:`~.source.Follower`,
decodes each (undecodable bytes become U+FFFD and are counted), runs it
through the PAN guard *before* any rule sees it, and submits the fields of
the first matching rule to a :class:`Store` together with the file position
after that line — the store makes both durable in one transaction, so a
restart (even after SIGKILL) neither repeats nor skips a line. Lines that
match no rule move the position too; that position is stored after each
chunk of lines (re-reading such a line after a crash is harmless).

Errors::

    Exception
     ├── Rejected       the store refused a line's fields (nothing stored); counted, skipped
     ├── StoreFailed    the store could not write; the same line is tried again
     └── rules.LineError  a matched line's time cannot be read; counted, skipped
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import structlog

from .rules import LineError, Rules
from .settings import LogFileSpec
from .source import Chunk, Follower, Position

log = structlog.get_logger("posmon.agent.logtail")

#: After an unexpected failure, wait this long and start again from the stored position.
RESTART_S = 5.0
#: How long to wait before trying a failed store write again (doubling up to the maximum).
STORE_RETRY_S = 0.5
STORE_RETRY_MAX_S = 30.0

_T = TypeVar("_T")
_SURROGATES = re.compile("[\udc80-\udcff]")


class Rejected(Exception):
    """The store refused the fields of a line (bad value); nothing was stored."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason


class StoreFailed(Exception):
    """The store could not write now (disk, database); try the same line again."""


class Store(Protocol):
    """Where payment reports and file positions go (the spool, through Payments)."""

    async def submit(
        self, data: Mapping[str, object], *, source: str, checkpoint: Mapping[str, str]
    ) -> str: ...

    async def load_checkpoint(self, key: str) -> str | None: ...

    async def save_checkpoint(self, values: Mapping[str, str]) -> None: ...


class Scrubber(Protocol):
    def scrub(self, text: str) -> tuple[str, int]: ...


def checkpoint_key(spec: LogFileSpec) -> str:
    return f"logtail:{spec.path}"


def decode(raw: bytes, encoding: str) -> tuple[str, int]:
    """The line as text, and how many bytes could not be decoded (each became U+FFFD)."""
    try:
        return raw.decode(encoding), 0
    except UnicodeDecodeError:
        return _SURROGATES.subn("\ufffd", raw.decode(encoding, "surrogateescape"))


class LogTail:
    """Follows one configured log file until stopped."""

    def __init__(self, spec: LogFileSpec, store: Store, guard: Scrubber) -> None:
        self.spec = spec
        self.store = store
        self.guard = guard
        self.key = checkpoint_key(spec)
        self.source = f"log:{spec.path}"
        self.rules = Rules(spec.rules)
        self.follower: Follower | None = None
        self._saved: str | None = None  # the position last stored
        self._unsaved = False  # lines were processed past the stored position
        self.lines = 0
        self.matched = 0
        self.unmatched = 0
        self.rejected = 0
        self.undecodable_bytes = 0
        self.masked = 0
        self.results: Counter[str] = Counter()
        self._rejected_fields: set[str] = set()
        self._store_failing = False

    # -- running ------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._follow(stop)
            except Exception as err:  # a bug or an I/O surprise: resume from the stored position
                log.error(
                    "logtail_failed", path=str(self.spec.path), error=f"{type(err).__name__}: {err}"
                )
                await _wait(stop, RESTART_S)

    async def _follow(self, stop: asyncio.Event) -> None:
        if not await self.start(stop):
            return
        try:
            while await self.step(stop):
                await _wait(stop, self.spec.poll_s)
        finally:
            self.close()

    async def start(self, stop: asyncio.Event) -> bool:
        """Load the stored position and set up the follower; False if stopped first."""
        stored = await self._store_call(lambda: self.store.load_checkpoint(self.key), stop)
        if stop.is_set():
            return False
        self._saved = stored
        self._unsaved = False
        position = None if stored is None else Position.decode(stored)
        self.follower = Follower(self.spec.path, start_at=self.spec.start_at, position=position)
        return True

    async def step(self, stop: asyncio.Event) -> bool:
        """Process every complete line there is now and store the position; False if stopped."""
        follower = self.follower
        assert follower is not None
        while (chunk := follower.read()) is not None:
            if follower.dirty:  # a new start (first open, new file): stored before any line
                follower.dirty = False
                await self._store_position(follower.position_at(chunk.start).encode(), stop)
            if not await self.process(chunk, stop):
                return False
            await self._save_position(stop)
            await asyncio.sleep(0)  # a long backlog does not hold the loop
            if stop.is_set():
                return False
        await self._save_position(stop)
        return not stop.is_set()

    def close(self) -> None:
        if self.follower is not None:
            self.follower.close()

    async def process(self, chunk: Chunk, stop: asyncio.Event) -> bool:
        """Every line of ``chunk`` in order; False if stopped before the end."""
        follower = self.follower
        assert follower is not None
        encoding = self.spec.encoding
        scrub = self.guard.scrub
        apply = self.rules.apply
        end = chunk.start
        parts = chunk.data.split(b"\n")
        tail = parts.pop()  # b"" after a final newline; else an unterminated last line
        if tail:
            parts.append(tail)
        last = len(parts) - 1
        for index, raw in enumerate(parts):
            end += len(raw) + (1 if index < last or not tail else 0)
            self.lines += 1
            text, bad = decode(raw, encoding)
            if bad:
                self.undecodable_bytes += bad
            text, masked = scrub(text)
            if masked:
                self.masked += masked
            try:
                fields = apply(text)
            except LineError as err:
                self.matched += 1
                self._reject(err.field, err.reason, end)
                continue
            if fields is None:
                self.unmatched += 1
                self._unsaved = True
                continue
            self.matched += 1
            position = follower.position_at(end).encode()
            if not await self._submit(fields, position, end, stop):
                return False
        return True

    async def _submit(
        self, fields: dict[str, str | int], position: str, end: int, stop: asyncio.Event
    ) -> bool:
        checkpoint = {self.key: position}
        try:
            result = await self._store_call(
                lambda: self.store.submit(fields, source=self.source, checkpoint=checkpoint), stop
            )
        except Rejected as err:
            self._reject(err.field, err.reason, end)
            return True
        if result is None:  # stopped while the store was failing
            return False
        self.results[result] += 1
        self._saved = position
        self._unsaved = False
        return True

    def _reject(self, field: str, reason: str, end: int) -> None:
        self.rejected += 1
        self._unsaved = True
        if field not in self._rejected_fields:  # once per field: the count says the rest
            self._rejected_fields.add(field)
            log.warning(
                "logline_rejected", path=str(self.spec.path), offset=end, field=field, reason=reason
            )

    async def _save_position(self, stop: asyncio.Event) -> None:
        """Store the position after everything processed, if it moved."""
        follower = self.follower
        assert follower is not None
        if not (self._unsaved or follower.dirty) or follower.fd is None:
            return
        follower.dirty = False
        self._unsaved = False
        await self._store_position(follower.position().encode(), stop)

    async def _store_position(self, position: str, stop: asyncio.Event) -> None:
        if position == self._saved:
            return
        await self._store_call(lambda: self.store.save_checkpoint({self.key: position}), stop)
        if not stop.is_set():
            self._saved = position

    async def _store_call(
        self, call: Callable[[], Awaitable[_T]], stop: asyncio.Event
    ) -> _T | None:
        """``await call()``; while the store fails, try again (backing off) until stopped."""
        delay = STORE_RETRY_S
        while True:
            try:
                result = await call()
            except StoreFailed as err:
                if not self._store_failing:
                    log.error("logtail_store_failed", path=str(self.spec.path), error=str(err))
                    self._store_failing = True
                if await _wait(stop, delay):
                    return None
                delay = min(delay * 2, STORE_RETRY_MAX_S)
                continue
            if self._store_failing:
                log.info("logtail_store_recovered", path=str(self.spec.path))
                self._store_failing = False
            return result

    # -- status -------------------------------------------------------------

    def status_json(self) -> dict[str, Any]:
        follower = self.follower
        where: dict[str, object] = (
            {"state": "starting", "reading": None, "inode": None, "offset": None}
            if follower is None
            else follower.info()
        )
        return {
            "path": str(self.spec.path),
            **where,
            "lines": self.lines,
            "matched": self.matched,
            "unmatched": self.unmatched,
            "rejected": self.rejected,
            "undecodable_bytes": self.undecodable_bytes,
            "masked": self.masked,
            "matched_by_rule": list(self.rules.matched_by),
            "results": dict(sorted(self.results.items())),
        }


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``stop`` was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
