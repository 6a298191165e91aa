"""The payment book: what the agent knows of each payment, as a pure state machine.

No I/O and no clock of its own: every method takes ``now`` (the agent's wall
clock, epoch seconds). A method *computes* a :class:`Change` — the payment
before and after, the ``txn`` events to record, counters to add — without
touching the book; :meth:`Book.apply` makes it so once the change is durable,
and :meth:`Book.undo` takes it back when the write failed.

A payment's life::

                 start                       end (approved/declined/error)
      (none) ──────────► open ─────────────────────────────────────────► closed
        │                 │  no end within timeout_s: txn "timeout",         ▲
        │                 │  in_doubt ──────────────► in_doubt ──────────────┤
        │ end             │  end "timeout" ──────────►  │  late end approved/│
        └─────────────────┴──────────────────────────►  │  declined, or a    │
                                                         │  resolution ───────┘
                                                         └─ late end timeout/error:
                                                            recorded, still in doubt

- Every end is a ``txn`` event (approved ones too), with ``latency_ms`` when
  both times are known. An end reported after the agent recorded the payment
  as a timeout is *late* (``late: true``); when it says approved or declined
  it settles the doubt (``in_doubt: false``).
- The deadline is ``received_at + timeout_s``: measured from when the agent
  took in the start, on its own clock, which is stored, so a restart does not
  move it. An end that arrives after the deadline, before the timeout was
  recorded, gets both: the timeout, then the late end.
- The same report twice (same ``txn_id``, same content) is a duplicate and
  changes nothing. A report that contradicts what is recorded (another
  amount for the same ``txn_id``, another end for a payment that ended on
  time) is a conflict (409): the POS reused an id, and nothing is guessed.
- Ended payments stay in the book for a day (so a retried post is known as a
  duplicate), payments in doubt for 30 days unless resolved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from protocol import Txn, format_datetime

from .fields import PaymentError, Submission, Value

State = Literal["open", "in_doubt", "closed"]
#: Outcomes that say for sure whether the card was charged.
SETTLED: Final = frozenset({"approved", "declined"})
#: Fields that identify a payment: two reports that disagree on one are two payments.
IDENTITY: Final = ("kind", "acquirer", "amount_minor", "currency", "stan")
#: Ended payments are remembered this long (a retried post is then a duplicate).
KEEP_CLOSED_S: Final = 86400.0
#: Payments in doubt that nobody resolves are dropped from the book after this.
KEEP_IN_DOUBT_S: Final = 30 * 86400.0


@dataclass(frozen=True, slots=True)
class Payment:
    """One payment as the book knows it."""

    txn_id: str
    state: State
    #: the agent's clock when it first heard of the payment (the deadline counts from here)
    received_at: float
    updated_at: float
    #: every field reported so far, later reports winning; started_at/ended_at
    #: filled from the agent's clock when the POS gave none
    values: Mapping[str, Value] = field(default_factory=dict)
    #: started_at is the agent's receipt time of the start, not the POS's
    guessed_start: bool = False
    start_digest: str | None = None
    end_digests: tuple[str, ...] = ()
    #: the outcome of the last txn event recorded for it
    outcome: str | None = None
    #: it was recorded as a timeout once: every end after that is late
    timed_out: bool = False
    resolution: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "txn_id": self.txn_id,
            "state": self.state,
            "received_at": self.received_at,
            "updated_at": self.updated_at,
            "values": dict(self.values),
            "guessed_start": self.guessed_start,
            "start_digest": self.start_digest,
            "end_digests": list(self.end_digests),
            "outcome": self.outcome,
            "timed_out": self.timed_out,
            "resolution": self.resolution,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Payment:
        return cls(
            txn_id=str(doc["txn_id"]),
            state=doc["state"],
            received_at=float(doc["received_at"]),
            updated_at=float(doc["updated_at"]),
            values=dict(doc["values"]),
            guessed_start=bool(doc["guessed_start"]),
            start_digest=doc["start_digest"],
            end_digests=tuple(doc["end_digests"]),
            outcome=doc["outcome"],
            timed_out=bool(doc["timed_out"]),
            resolution=doc["resolution"],
        )


@dataclass(frozen=True, slots=True)
class Change:
    """What one report, timeout or resolution does to the book."""

    txn_id: str
    #: started, updated, ended, late_end, timeout, resolved or duplicate
    result: str
    before: Payment | None
    after: Payment | None
    events: tuple[Txn, ...] = ()
    #: counters to add: an outcome per event, and late, resolved, technical
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def stores(self) -> bool:
        """False for a duplicate: nothing to write (but a checkpoint may still be)."""
        return self.after is not self.before


class Book:
    """Every payment the agent keeps, by ``txn_id``; see the module docstring."""

    def __init__(
        self,
        *,
        timeout_s: float,
        technical_codes: Collection[str],
        payments: Iterable[Payment] = (),
    ) -> None:
        self.timeout_s = timeout_s
        self.technical_codes = frozenset(technical_codes)
        self._payments: dict[str, Payment] = {}
        self._open: dict[str, float] = {}  # txn_id → deadline
        for payment in payments:
            self._put(payment)

    # -- reading ----------------------------------------------------------

    def get(self, txn_id: str) -> Payment | None:
        return self._payments.get(txn_id)

    def __len__(self) -> int:
        return len(self._payments)

    def open_count(self) -> int:
        return len(self._open)

    def in_doubt(self) -> list[Payment]:
        """Payments in doubt, oldest first."""
        found = [p for p in self._payments.values() if p.state == "in_doubt"]
        return sorted(found, key=lambda p: (p.received_at, p.txn_id))

    def next_deadline(self) -> float | None:
        """When the next open payment times out, if any is open."""
        return min(self._open.values(), default=None)

    # -- computing changes (pure) -----------------------------------------

    def submit(self, sub: Submission, now: float) -> Change:
        """What a start or an end does; raises :class:`PaymentError` 409 on a conflict."""
        before = self._payments.get(sub.txn_id)
        if not sub.is_end:
            return self._start(before, sub, now)
        if before is not None and before.state == "open" and now >= self._deadline(before):
            # The deadline passed before the timeout was recorded: record both.
            timeout = self._timeout(before)
            late = self._end(timeout.after, sub, now)
            return Change(
                sub.txn_id,
                late.result,
                before,
                late.after,
                timeout.events + late.events,
                _sum(timeout.counts, late.counts),
            )
        return self._end(before, sub, now)

    def resolve(self, txn_id: str, resolution: str, now: float) -> Change:
        """Clear a payment in doubt: 404 if unknown, 409 if it is not in doubt."""
        before = self._payments.get(txn_id)
        if before is None:
            raise PaymentError(
                "txn_id", "no such payment (never reported, or forgotten)", status=404
            )
        if before.state != "in_doubt":
            if before.resolution == resolution:
                return Change(txn_id, "duplicate", before, before)
            why = {
                "open": "it is still open (not timed out yet)",
                "closed": f"it ended {before.outcome}"
                + (f" and was resolved {before.resolution}" if before.resolution else ""),
            }[before.state]
            raise PaymentError("txn_id", f"not in doubt: {why}", status=409)
        after = dataclasses.replace(before, state="closed", resolution=resolution, updated_at=now)
        event = self._event(after, before.outcome or "timeout", now, resolution=resolution)
        return Change(txn_id, "resolved", before, after, (event,), {"resolved": 1})

    def expire(self, now: float) -> list[Change]:
        """The open payments whose deadline has passed, each as a timeout."""
        due = sorted((d, t) for t, d in self._open.items() if d <= now)
        return [self._timeout(self._payments[t]) for _, t in due]

    def stale(self, now: float) -> list[str]:
        """Payments to forget: ended over a day ago, in doubt for 30 days."""
        return [
            p.txn_id
            for p in self._payments.values()
            if (p.state == "closed" and p.updated_at < now - KEEP_CLOSED_S)
            or (p.state == "in_doubt" and p.updated_at < now - KEEP_IN_DOUBT_S)
        ]

    # -- changing the book ------------------------------------------------

    def apply(self, change: Change) -> None:
        if change.after is None:
            self._drop(change.txn_id)
        else:
            self._put(change.after)

    def undo(self, change: Change) -> None:
        if change.before is None:
            self._drop(change.txn_id)
        else:
            self._put(change.before)

    def forget(self, txn_ids: Iterable[str]) -> None:
        for txn_id in txn_ids:
            self._drop(txn_id)

    # -- the rules --------------------------------------------------------

    def _start(self, before: Payment | None, sub: Submission, now: float) -> Change:
        if before is None:
            values = dict(sub.values)
            guessed = "started_at" not in values
            if guessed:
                values["started_at"] = _iso(now)
            after = Payment(
                txn_id=sub.txn_id,
                state="open",
                received_at=now,
                updated_at=now,
                values=values,
                guessed_start=guessed,
                start_digest=sub.digest,
            )
            return Change(sub.txn_id, "started", before, after)
        if sub.digest == before.start_digest:
            return Change(sub.txn_id, "duplicate", before, before)
        self._check_identity(before, sub)
        if before.state != "open":
            # A start after the end (two sources, out of order): nothing new to record.
            return Change(sub.txn_id, "duplicate", before, before)
        values = {**before.values, **sub.values}
        guessed = before.guessed_start and "started_at" not in sub.values
        after = dataclasses.replace(
            before, values=values, guessed_start=guessed, updated_at=now, start_digest=sub.digest
        )
        return Change(sub.txn_id, "updated", before, after)

    def _end(self, before: Payment | None, sub: Submission, now: float) -> Change:
        outcome = str(sub.values["outcome"])
        if before is not None:
            if sub.digest in before.end_digests:
                return Change(sub.txn_id, "duplicate", before, before)
            self._check_identity(before, sub)
            if before.state == "closed" and not before.timed_out:
                raise PaymentError(
                    "txn_id",
                    f"this payment already ended ({before.outcome}) with other fields; "
                    "a new payment needs a new txn_id",
                    status=409,
                )
        values = {**(before.values if before else {}), **sub.values}
        values.pop("outcome", None)
        if "ended_at" not in sub.values:
            values["ended_at"] = _iso(now)
        late = before is not None and before.timed_out
        if late:
            assert before is not None
            settled_before = before.state == "closed"
            in_doubt = outcome not in SETTLED and not settled_before
            state: State = "in_doubt" if in_doubt else "closed"
        else:
            in_doubt = outcome == "timeout"
            state = "in_doubt" if in_doubt else "closed"
        if before is None:
            before_or_new = Payment(sub.txn_id, state, received_at=now, updated_at=now)
        else:
            before_or_new = before
        after = dataclasses.replace(
            before_or_new,
            state=state,
            updated_at=now,
            values=values,
            guessed_start=before_or_new.guessed_start and "started_at" not in sub.values,
            end_digests=(*before_or_new.end_digests, sub.digest),
            outcome=outcome,
            timed_out=late or outcome == "timeout",
        )
        event = self._event(after, outcome, now, in_doubt=in_doubt, late=late)
        counts = {outcome: 1}
        if late:
            counts["late"] = 1
        if event.technical:
            counts["technical"] = 1
        return Change(sub.txn_id, "late_end" if late else "ended", before, after, (event,), counts)

    def _timeout(self, before: Payment) -> Change:
        deadline = self._deadline(before)
        after = dataclasses.replace(
            before, state="in_doubt", outcome="timeout", timed_out=True, updated_at=deadline
        )
        event = self._event(after, "timeout", deadline, in_doubt=True, ended=False)
        return Change(before.txn_id, "timeout", before, after, (event,), {"timeout": 1})

    def _check_identity(self, before: Payment, sub: Submission) -> None:
        differ = [
            name
            for name in IDENTITY
            if name in sub.values
            and name in before.values
            and sub.values[name] != before.values[name]
        ]
        if (
            "started_at" in sub.values
            and not before.guessed_start
            and before.values.get("started_at") not in (None, sub.values["started_at"])
        ):
            differ.append("started_at")
        if differ:
            raise PaymentError(
                differ[0],
                f"txn_id is already recorded with another {', '.join(differ)}; "
                "a new payment needs a new txn_id",
                status=409,
            )

    def _event(
        self,
        payment: Payment,
        outcome: str,
        ts: float,
        *,
        in_doubt: bool = False,
        late: bool = False,
        ended: bool = True,
        resolution: str | None = None,
    ) -> Txn:
        v = payment.values
        started = _time(v.get("started_at"))
        ended_at = _time(v.get("ended_at")) if ended else None
        latency = None
        if started is not None and ended_at is not None and ended_at >= started:
            latency = round((ended_at - started).total_seconds() * 1000.0, 3)
        response_code = _opt(v.get("response_code"))
        return Txn(
            seq=0,
            ts=datetime.fromtimestamp(ts, UTC),
            txn_id=payment.txn_id,
            txn_kind=str(v.get("kind", "sale")),  # type: ignore[arg-type]
            acquirer=_opt(v.get("acquirer")),
            outcome=outcome,  # type: ignore[arg-type]
            response_code=response_code,
            latency_ms=latency,
            started_at=started,
            ended_at=ended_at,
            stan=_opt(v.get("stan")),
            rrn=_opt(v.get("rrn")),
            auth_code=_opt(v.get("auth_code")),
            amount_minor=_int(v.get("amount_minor")),
            currency=_opt(v.get("currency")),
            in_doubt=in_doubt,
            technical=outcome in ("declined", "error") and response_code in self.technical_codes,
            message=_opt(v.get("message")),
            late=late,
            resolution=resolution,  # type: ignore[arg-type]
        )

    def _deadline(self, payment: Payment) -> float:
        return payment.received_at + self.timeout_s

    def _put(self, payment: Payment) -> None:
        self._payments[payment.txn_id] = payment
        if payment.state == "open":
            self._open[payment.txn_id] = self._deadline(payment)
        else:
            self._open.pop(payment.txn_id, None)

    def _drop(self, txn_id: str) -> None:
        self._payments.pop(txn_id, None)
        self._open.pop(txn_id, None)


def _iso(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC))


def _time(value: Value | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _opt(value: Value | None) -> str | None:
    return None if value is None else str(value)


def _int(value: Value | None) -> int | None:
    return None if value is None else int(value)


def _sum(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for key, n in b.items():
        out[key] = out.get(key, 0) + n
    return out
