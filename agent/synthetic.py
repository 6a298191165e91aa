"""A synthetic payment source for demos, load tests and conservation tests.

Off by default (``[synthetic] rate_per_s = 0``). It records ``txn`` events
with ids ``synthetic-N`` and acquirer ``synthetic`` so they can never be
mistaken for real payments.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from protocol import Event, Txn

#: Mostly approved, as at a real till, with each failure kind present.
_OUTCOMES = ("approved",) * 7 + ("declined", "timeout", "error")
_TICK_S = 0.05


class SyntheticTxns:
    def __init__(self, rate_per_s: float) -> None:
        self.rate_per_s = rate_per_s
        self._n = itertools.count(1)

    def make(self, count: int) -> list[Event]:
        now = datetime.now(UTC)
        out: list[Event] = []
        for _ in range(count):
            n = next(self._n)
            outcome = _OUTCOMES[n % len(_OUTCOMES)]
            latency = 400.0 + (n * 37) % 1600
            out.append(
                Txn(
                    seq=0,
                    ts=now,
                    txn_id=f"synthetic-{n}",
                    acquirer="synthetic",
                    outcome=outcome,  # type: ignore[arg-type]
                    response_code={"approved": "00", "declined": "05", "error": "96"}.get(outcome),
                    latency_ms=None if outcome == "timeout" else latency,
                    started_at=now - timedelta(milliseconds=latency),
                    ended_at=None if outcome == "timeout" else now,
                    amount_minor=100 + n % 10_000,
                    currency="EUR",
                    in_doubt=outcome == "timeout",
                    technical=outcome == "error",
                    message="synthetic load",
                )
            )
        return out

    async def run(
        self, record: Callable[[list[Event]], Awaitable[None]], stop: asyncio.Event
    ) -> None:
        loop = asyncio.get_running_loop()
        owed, last = 0.0, loop.time()
        tick = min(_TICK_S * 20, max(_TICK_S, 1.0 / self.rate_per_s))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)
            now = loop.time()
            owed += (now - last) * self.rate_per_s
            last = now
            count = int(owed)
            if count:
                owed -= count
                await record(self.make(count))
