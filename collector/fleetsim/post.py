"""Talking to the collector: tokens in its database, reports over its real ingest API.

    PostError(Exception)   the collector refused a report (401/403/4xx: not
                           retried) or could not be reached after retries;
                           the message says which terminal, what status and
                           what the collector answered.

Tokens are created the way ``posmon-collector token create`` does it, in the
collector's database file (the collector reads new tokens from the database
when it first sees them, so it may be running). Reports are encoded with the
protocol's codec, gzip-compressed and posted with the terminal's agent token
to ``POST /api/v1/reports``; 429/5xx and network errors are retried with
backoff, like the agent's uplink.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import aiohttp

from protocol import ProtocolError, Report, decode_ack, encode_report, gzip_body

from ..storage import StorageError, storage_for

RETRIES: Final = 5
BACKOFF_S: Final = 0.2
TIMEOUT_S: Final = 60.0
PARALLEL: Final = 8


class PostError(Exception):
    """A report the collector would not take; the simulation cannot go on."""


async def create_tokens(
    db: str, terminals: Iterable[tuple[str, str]], *, viewer: str | None = None
) -> tuple[dict[str, str], str | None]:
    """Agent tokens for (store, terminal) pairs, and a viewer token if ``viewer`` is named.

    Raises :class:`StorageError` when the database cannot be opened or written.
    """
    storage = storage_for(db)
    await storage.open()
    try:
        tokens = {
            terminal: await storage.create_token("agent", terminal_id=terminal, store_id=store)
            for store, terminal in terminals
        }
        viewer_token = None
        if viewer is not None:
            viewer_token = await storage.create_token("viewer", name=viewer)
        return tokens, viewer_token
    finally:
        await storage.close()


@dataclass
class PostCounters:
    reports: int = 0
    events: int = 0
    stored: int = 0
    duplicates: int = 0
    retries: int = 0
    #: HTTP status of every answer but 200, counted
    refused: dict[int, int] = field(default_factory=dict)


def _excerpt(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text if len(text) <= 300 else text[:300] + "…"


class Poster:
    """Posts reports with each terminal's token; use as ``async with Poster(url, tokens)``."""

    def __init__(self, url: str, tokens: dict[str, str], *, gzip: bool = True) -> None:
        self.url = url.rstrip("/") + "/api/v1/reports"
        self.tokens = tokens
        self.gzip = gzip
        self.counters = PostCounters()
        self._session: aiohttp.ClientSession | None = None
        self._limit = asyncio.Semaphore(PARALLEL)

    async def __aenter__(self) -> Poster:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post_all(self, reports: Sequence[Report]) -> None:
        """Post ``reports``: in order per terminal, terminals side by side."""
        by_terminal: dict[str, list[Report]] = {}
        for report in reports:
            by_terminal.setdefault(report.agent.terminal_id, []).append(report)

        async def one_terminal(batch: list[Report]) -> None:
            async with self._limit:
                for report in batch:
                    await self.post(report)

        async with asyncio.TaskGroup() as group:
            for batch in by_terminal.values():
                group.create_task(one_terminal(batch))

    async def post(self, report: Report) -> None:
        """Post one report; raises :class:`PostError` if the collector does not take it."""
        session = self._session
        if session is None:
            raise RuntimeError("Poster used outside 'async with'")
        terminal = report.agent.terminal_id
        body = encode_report(report)
        headers = {
            "Authorization": f"Bearer {self.tokens[terminal]}",
            "Content-Type": "application/json",
        }
        if self.gzip:
            body = gzip_body(body)
            headers["Content-Encoding"] = "gzip"
        problem = ""
        for attempt in range(RETRIES + 1):
            if attempt:
                self.counters.retries += 1
                await asyncio.sleep(BACKOFF_S * 2 ** (attempt - 1))
            try:
                async with session.post(self.url, data=body, headers=headers) as response:
                    answer = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                problem = f"cannot reach the collector at {self.url}: {err or type(err).__name__}"
                continue
            if status == 200:
                self._acked(report, answer)
                return
            self.counters.refused[status] = self.counters.refused.get(status, 0) + 1
            problem = (
                f"the collector answered {status} to a report of terminal {terminal}: "
                f"{_excerpt(answer)}"
            )
            if status in (401, 403):
                raise PostError(problem + " (is the token in the collector's database?)")
            if status != 429 and status < 500:
                raise PostError(problem)
        raise PostError(f"{problem} (gave up after {RETRIES + 1} attempts)")

    def _acked(self, report: Report, answer: bytes) -> None:
        try:
            ack = decode_ack(answer)
        except ProtocolError as err:
            raise PostError(f"the collector's answer is not an ack: {err}") from None
        expected = {e.seq for e in report.events}
        if not expected.issubset(ack.acked):
            raise PostError(
                f"the collector acknowledged {len(ack.acked)} of {len(expected)} events "
                f"of terminal {report.agent.terminal_id}"
            )
        counters = self.counters
        counters.reports += 1
        counters.events += len(report.events)
        counters.stored += ack.stored
        counters.duplicates += ack.duplicates


__all__ = ["PostCounters", "PostError", "Poster", "StorageError", "create_tokens"]
