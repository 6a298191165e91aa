"""The agent's log tailers: one :class:`~.tailer.LogTail` per ``[[logfile]]``,
storing through the agent's :class:`~agent.payments.intake.Payments`.

:class:`PaymentsStore` is the boundary to the payment intake: a report and
its file position go to :meth:`Payments.submit` together (one SQLite
transaction); a position alone goes to :meth:`Payments.commit_checkpoint`,
in order with the reports. :class:`~agent.payments.fields.PaymentError` is
mapped here — 503 (the spool cannot write now) to ``StoreFailed`` (the same
line is tried again), any other status to ``Rejected`` (counted, skipped).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from ..pan_guard import GUARD
from ..payments.fields import PaymentError
from ..payments.intake import Payments
from ..spool import Spool, SpoolError
from .settings import LogFileSpec
from .tailer import LogTail, Rejected, Scrubber, StoreFailed

T = TypeVar("T")
SpoolCall = Callable[[Callable[[Spool], T]], Awaitable[T]]


class PaymentsStore:
    """Reports and file positions into the spool, through the payment intake."""

    def __init__(self, payments: Payments, spool_call: SpoolCall[Any]) -> None:
        self._payments = payments
        self._spool_call = spool_call

    async def submit(
        self, data: Mapping[str, object], *, source: str, checkpoint: Mapping[str, str]
    ) -> str:
        try:
            return await self._payments.submit(data, source=source, checkpoint=checkpoint)
        except PaymentError as err:
            raise _mapped(err) from err

    async def load_checkpoint(self, key: str) -> str | None:
        try:
            value: str | None = await self._spool_call(lambda s: s.get_meta(key))
        except (SpoolError, sqlite3.Error) as err:
            raise StoreFailed(str(err)) from err
        return value

    async def save_checkpoint(self, values: Mapping[str, str]) -> None:
        try:
            await self._payments.commit_checkpoint(values)
        except PaymentError as err:
            raise _mapped(err) from err


def _mapped(err: PaymentError) -> Exception:
    if err.status == 503:
        return StoreFailed(err.reason)
    return Rejected(err.field or "report", err.reason)


class LogTails:
    """Every configured log file, followed until the agent stops."""

    def __init__(
        self,
        specs: Sequence[LogFileSpec],
        payments: Payments,
        spool_call: SpoolCall[Any],
        *,
        guard: Scrubber = GUARD,
    ) -> None:
        store = PaymentsStore(payments, spool_call)
        self.tails = [LogTail(spec, store, guard) for spec in specs]

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(tail.run(stop) for tail in self.tails))

    def status_json(self) -> list[dict[str, Any]]:
        return [tail.status_json() for tail in self.tails]
