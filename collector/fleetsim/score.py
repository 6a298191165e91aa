"""How well the collector named the causes: the truth against ``GET /api/v1/transactions``.

    ScoreError(Exception)   the query API could not be read (unreachable,
                            refused, or the correlator never went idle).

:func:`score` is pure: truth rows and the API's transaction items in, a
:class:`Score` out — per expected cause: how many, how many the collector
got right, the accuracy, and what it called the others (the confusion;
``missing`` when the API does not list the payment as failed at all).
:func:`fetch_failed` and :func:`wait_idle` read the real API with a viewer
token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlencode

import aiohttp

from protocol.fields import format_datetime

from .truth import TruthRow

MISSING: Final = "missing"
PAGE_LIMIT: Final = 1000
MAX_PAGES: Final = 10_000


class ScoreError(Exception):
    """The collector's query API did not give what scoring needs."""


@dataclass(frozen=True, slots=True)
class CauseScore:
    cause: str
    expected: int
    right: int
    #: what the collector called the ones it got wrong, and how often
    confusion: Mapping[str, int]

    @property
    def accuracy(self) -> float:
        return self.right / self.expected if self.expected else 1.0


@dataclass(frozen=True, slots=True)
class Score:
    causes: tuple[CauseScore, ...]
    #: payments the collector calls failed that the truth does not list
    unexpected: int

    @property
    def expected(self) -> int:
        return sum(c.expected for c in self.causes)

    @property
    def right(self) -> int:
        return sum(c.right for c in self.causes)

    @property
    def accuracy(self) -> float:
        return self.right / self.expected if self.expected else 1.0

    def of(self, cause: str) -> CauseScore:
        for entry in self.causes:
            if entry.cause == cause:
                return entry
        return CauseScore(cause, 0, 0, {})

    def to_json(self) -> dict[str, Any]:
        return {
            "expected": self.expected,
            "right": self.right,
            "accuracy": round(self.accuracy, 4),
            "unexpected": self.unexpected,
            "causes": {
                c.cause: {
                    "expected": c.expected,
                    "right": c.right,
                    "accuracy": round(c.accuracy, 4),
                    "confusion": dict(c.confusion),
                }
                for c in self.causes
            },
        }


def score(
    truth: Iterable[TruthRow], items: Iterable[Mapping[str, Any]], *, run_id: str | None = None
) -> Score:
    """Compare ``truth`` with API transaction items (``failed=true``).

    Items are matched by (terminal_id, txn_id). An item not in the truth
    counts as ``unexpected`` when its txn_id belongs to this run (starts
    with ``run_id-``) or when no ``run_id`` is given.
    """
    rows = list(truth)
    got: dict[tuple[str, str], str | None] = {}
    unexpected = 0
    keys = {row.key for row in rows}
    for item in items:
        key = (str(item.get("terminal_id")), str(item.get("txn_id")))
        if key in keys:
            cause = item.get("cause")
            got[key] = None if cause is None else str(cause)
        elif run_id is None or key[1].startswith(f"{run_id}-"):
            unexpected += 1
    per: dict[str, tuple[int, int, dict[str, int]]] = {}
    for row in rows:
        expected = str(row.expected_cause)
        count, right, confusion = per.get(expected, (0, 0, {}))
        found = got.get(row.key, MISSING)
        answer = "unattributed" if found is None else found
        if answer == expected:
            right += 1
        else:
            confusion[answer] = confusion.get(answer, 0) + 1
        per[expected] = (count + 1, right, confusion)
    causes = tuple(
        CauseScore(cause, count, right, dict(sorted(confusion.items(), key=lambda kv: -kv[1])))
        for cause, (count, right, confusion) in sorted(per.items())
    )
    return Score(causes, unexpected)


def format_score(result: Score) -> str:
    """The per-cause table ``--score`` prints."""
    lines = [f"{'cause':<16} {'expected':>8} {'right':>6} {'accuracy':>9}  called instead"]
    for c in result.causes:
        instead = ", ".join(f"{name} {n}" for name, n in c.confusion.items()) or "-"
        lines.append(f"{c.cause:<16} {c.expected:>8} {c.right:>6} {c.accuracy:>8.1%}  {instead}")
    lines.append(
        f"{'all':<16} {result.expected:>8} {result.right:>6} {result.accuracy:>8.1%}  "
        f"unexpected failures: {result.unexpected}"
    )
    return "\n".join(lines)


async def _get(session: aiohttp.ClientSession, url: str, token: str) -> Any:
    try:
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
            body = await response.read()
            if response.status != 200:
                text = body.decode("utf-8", "replace")[:300]
                raise ScoreError(f"GET {url} answered {response.status}: {text}")
            try:
                return await response.json(content_type=None)
            except ValueError as err:
                raise ScoreError(f"GET {url}: not JSON: {err}") from None
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        raise ScoreError(
            f"cannot reach the collector at {url}: {err or type(err).__name__}"
        ) from None


async def wait_idle(
    session: aiohttp.ClientSession, url: str, token: str, *, timeout_s: float = 300.0
) -> None:
    """Wait until ``GET /api/v1/fleet`` says the correlator is idle."""
    deadline = time.monotonic() + timeout_s
    fleet_url = url.rstrip("/") + "/api/v1/fleet"
    while True:
        fleet = await _get(session, fleet_url, token)
        correlator = fleet.get("correlator") if isinstance(fleet, dict) else None
        if isinstance(correlator, dict) and correlator.get("idle") is True:
            return
        if time.monotonic() > deadline:
            raise ScoreError(
                f"the correlator did not become idle within {timeout_s:g} s (last: {correlator!r})"
            )
        await asyncio.sleep(0.5)


async def fetch_failed(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """Every failed payment the API lists (all pages of ``failed=true``)."""
    params = {"failed": "true", "limit": str(PAGE_LIMIT)}
    if since is not None:
        params["since"] = format_datetime(since)
    if until is not None:
        params["until"] = format_datetime(until)
    base = url.rstrip("/") + "/api/v1/transactions"
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        page = await _get(session, f"{base}?{urlencode(query)}", token)
        if not isinstance(page, dict) or not isinstance(page.get("items"), list):
            raise ScoreError(f"GET {base}: expected {{'items': [...], 'next_cursor': ...}}")
        items += [i for i in page["items"] if isinstance(i, dict)]
        cursor = page.get("next_cursor")
        if not cursor:
            return items
    raise ScoreError(f"GET {base}: more than {MAX_PAGES} pages")
