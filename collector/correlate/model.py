"""Types shared by the correlator's pieces. Pure: no I/O.

An event is named by its ``event_id``: ``"<agent_id>:<seq>"`` (the pair the
collector stores it under). Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from protocol.causes import Cause

#: What to tell a person about a payment that is in doubt, whatever its cause.
IN_DOUBT_ACTION = (
    "The customer may have been charged: verify this payment's status with the acquirer "
    "before charging again."
)


def event_id(agent_id: str, seq: int) -> str:
    """The id the API and the evidence lists use for a stored event."""
    return f"{agent_id}:{seq}"


@dataclass(frozen=True, slots=True)
class TxnRow:
    """A payment as the ``txns`` table holds it (the fields attribution needs)."""

    terminal_id: str
    store_id: str
    txn_id: str
    agent_id: str
    seq: int
    ts: datetime  # when it ended or timed out
    started_at: datetime | None
    acquirer: str | None
    outcome: str  # approved | declined | timeout | error
    response_code: str | None
    technical: bool
    in_doubt: bool

    @property
    def begin(self) -> datetime:
        """When the payment started (its end time when the start is unknown)."""
        return (
            self.started_at
            if self.started_at is not None and self.started_at <= self.ts
            else self.ts
        )


@dataclass(frozen=True, slots=True)
class Evidence:
    """One stored event that supports a verdict, as the API shows it."""

    event_id: str
    kind: str  # the event kind: probe_change, probe_window, device_status, ...
    ts: datetime
    terminal_id: str
    what: str  # in plain words: "gateway probe 192.168.1.1 failing (timeout, 100 % loss)"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The cause of one failed payment."""

    cause: Cause
    confidence: float  # 0..1
    evidence: tuple[Evidence, ...]
    action: str  # what to do, in plain words (in-doubt payments: IN_DOUBT_ACTION first)
