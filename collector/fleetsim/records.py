"""Small values the simulator's modules share: simulated times and payment records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from protocol.events import Txn

from .plan import Fault


def utc(t: float) -> datetime:
    """A simulated time (epoch seconds) as an aware UTC datetime."""
    return datetime.fromtimestamp(t, UTC)


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """A payment the simulated POS made, as the truth file needs it."""

    terminal_id: str
    store_id: str
    txn_id: str
    acquirer: str
    started_at: datetime
    ts: datetime  # when it ended or timed out (the txn event's ts)
    outcome: str
    response_code: str | None
    in_doubt: bool
    failed: bool
    #: the fault that broke it (None: it did not fail, or failed with no fault)
    fault: Fault | None


@dataclass(frozen=True, slots=True)
class Pending:
    """A payment whose txn event is recorded at its end (or deadline)."""

    record: PaymentRecord
    event: Txn
