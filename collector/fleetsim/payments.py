"""The simulated POS's payments: what each one ends as, and the ``txn`` event the agent records.

Without a fault a payment is approved (response code 00) or, at
``decline_pct``, declined by the card's issuer (05 or 51: not failed). A
fault active when the payment starts may break it (:func:`.faults.payment_failure`).
A timeout is recorded at its deadline (start + ``payment_timeout_s``), in
doubt, as the agent's payment book does. A small background rate of isolated
timeouts happens with no fault at all — only where no fault is within
``quiet_margin_s`` of the terminal's store (or of the acquirer, for outages),
so that "unknown" is the only right answer for them. A payment that is open
when a power cut takes the store dark times out; the agent records it after
it starts again.
"""

from __future__ import annotations

import dataclasses
import string
from datetime import timedelta
from typing import TYPE_CHECKING

from protocol.causes import TECHNICAL_RESPONSE_CODES
from protocol.events import Txn

from . import faults as fx
from .plan import Fault
from .records import PaymentRecord, Pending, utc

if TYPE_CHECKING:
    from .agents import TerminalSim


def _quiet(sim: TerminalSim, t: float, acquirer: str) -> bool:
    margin = timedelta(seconds=sim.plan.scenario.quiet_margin_s)
    now = utc(t)
    for fault in sim.faults:
        if fault.start - margin <= now < fault.end + margin:
            return False
    for fault in sim.plan.faults:
        if (
            fault.kind == "acquirer_outage"
            and fault.acquirer == acquirer
            and fault.start - margin <= now < fault.end + margin
        ):
            return False
    return True


def _power_cut_during(sim: TerminalSim, start: float, end: float) -> Fault | None:
    for fault in sim.faults:
        if fault.kind == "power_cut" and start < fault.dark_start.timestamp() <= end:
            return fault
    return None


def make_payment(
    sim: TerminalSim, t: float, *, open_at_cut: Fault | None = None
) -> tuple[Pending, float]:
    """Start a payment at ``t``: its record, its txn event and when that is recorded.

    ``open_at_cut``: the payment is still open when that power cut takes the store dark.
    """
    rng = sim.rng
    scenario = sim.plan.scenario
    sim.n_payments += 1
    txn_id = f"{sim.run_id}-{sim.terminal}-{sim.n_payments:05d}"
    acquirer = rng.choice(scenario.acquirers)
    start = utc(t)
    failure: fx.Failure | None = None
    cause_fault: Fault | None = None
    for fault in fx.active(sim.faults, start):
        failure = fx.payment_failure(fault, acquirer, rng)
        if failure is not None:
            cause_fault = fault
            break
    latency_s = rng.uniform(1.5, 6.0)
    # noise: the acquirer is slower at times, never past the POS's timeout
    latency_s = min(latency_s * sim.noise.latency_factor(), 0.8 * sim.timeout_s)
    cut = open_at_cut or _power_cut_during(sim, t, t + latency_s)
    if cut is not None:
        failure, cause_fault = fx.Failure("timeout"), cut
    elif (
        failure is None
        and rng.random() * sim.rate_per_s * 3600 < (scenario.background_failures_per_hour)
        and _quiet(sim, t, acquirer)
    ):
        failure = fx.Failure("timeout")
    amount = rng.randint(150, 25000)
    stan = f"{sim.n_payments % 1_000_000:06d}"
    base = Txn(
        seq=0, ts=start, txn_id=txn_id, acquirer=acquirer, started_at=start,
        amount_minor=amount, currency="EUR", stan=stan, outcome="timeout",
    )  # fmt: skip
    code: str | None
    if failure is not None and failure.outcome == "timeout":
        end_t = t + sim.timeout_s
        event = dataclasses.replace(base, ts=utc(end_t), in_doubt=True)
    else:
        if failure is None:
            declined = rng.random() * 100 < scenario.decline_pct
            outcome, code, message = (
                ("declined", sim.noise.decline_code(rng.choice(("05", "51"))), None)
                if declined
                else ("approved", "00", None)
            )
        else:
            outcome, code, message = failure.outcome, failure.response_code, failure.message
            if outcome == "error":
                latency_s = rng.uniform(0.3, 3.0)
        end_t = t + latency_s
        event = dataclasses.replace(
            base,
            ts=utc(end_t),
            outcome=outcome,  # type: ignore[arg-type]
            response_code=code,
            latency_ms=round(latency_s * 1000, 3),
            ended_at=utc(end_t),
            rrn=f"{rng.randrange(10**12):012d}" if outcome in ("approved", "declined") else None,
            auth_code=(
                "".join(rng.choices(string.ascii_uppercase + string.digits, k=6))
                if outcome == "approved"
                else None
            ),
            technical=outcome in ("declined", "error") and code in TECHNICAL_RESPONSE_CODES,
            message=message,
        )
    failed = event.outcome in ("timeout", "error") or event.technical
    record = PaymentRecord(
        terminal_id=sim.terminal,
        store_id=sim.store,
        txn_id=txn_id,
        acquirer=acquirer,
        started_at=start,
        ts=event.ts,
        outcome=event.outcome,
        response_code=event.response_code,
        in_doubt=event.in_doubt,
        failed=failed,
        fault=cause_fault if failed else None,
    )
    return Pending(record, event), end_t
