"""The payment book as a pure state machine: every rule, then random histories."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.payments.book import KEEP_CLOSED_S, Book, Change, Payment
from agent.payments.fields import PaymentError, Submission, Value
from protocol import Txn

T0 = 1_800_000_000.0  # an arbitrary wall-clock instant
TIMEOUT = 60.0


def book(**kw: Any) -> Book:
    return Book(timeout_s=TIMEOUT, technical_codes=("68", "91", "96", "98"), **kw)


def start(txn_id: str = "t1", **values: Value) -> Submission:
    return Submission(txn_id, {"acquirer": "acq-a", "amount_minor": 1250, **values})


def end(txn_id: str = "t1", outcome: str = "approved", **values: Value) -> Submission:
    return Submission(txn_id, {"outcome": outcome, **values})


def do(b: Book, change: Change) -> Change:
    b.apply(change)
    return change


def only_event(change: Change) -> Txn:
    assert len(change.events) == 1, change.events
    return change.events[0]


def test_start_then_end_is_one_txn_with_latency_and_the_start_fields() -> None:
    b = book()
    started = do(b, b.submit(start(started_at="2026-11-21T09:00:00.000000Z"), T0))
    assert started.result == "started" and started.events == ()
    assert b.open_count() == 1 and b.next_deadline() == T0 + TIMEOUT
    ended = do(b, b.submit(end(response_code="00", ended_at="2026-11-21T09:00:01.250000Z"), T0 + 1))
    event = only_event(ended)
    assert ended.result == "ended"
    assert (event.outcome, event.acquirer, event.amount_minor) == ("approved", "acq-a", 1250)
    assert event.latency_ms == 1250.0
    assert not event.in_doubt and not event.late and not event.technical
    assert b.open_count() == 0 and b.next_deadline() is None
    assert ended.counts == {"approved": 1}


def test_times_default_to_when_the_agent_heard_them() -> None:
    b = book()
    do(b, b.submit(start(), T0))
    event = only_event(do(b, b.submit(end(), T0 + 2.5)))
    assert event.latency_ms == 2500.0
    assert event.started_at is not None and event.started_at.timestamp() == T0
    assert event.ended_at is not None and event.ended_at.timestamp() == T0 + 2.5


def test_start_and_end_in_one_report_without_times_has_no_latency() -> None:
    b = book()
    event = only_event(do(b, b.submit(end(acquirer="acq-a"), T0)))
    assert event.outcome == "approved" and event.latency_ms is None and event.started_at is None


def test_no_end_within_the_timeout_is_a_timeout_in_doubt_at_the_deadline() -> None:
    b = book()
    do(b, b.submit(start(), T0))
    assert b.expire(T0 + TIMEOUT - 0.001) == []
    [change] = b.expire(T0 + TIMEOUT + 5)
    event = only_event(do(b, change))
    assert (event.outcome, event.in_doubt, event.late) == ("timeout", True, False)
    assert event.ts.timestamp() == T0 + TIMEOUT  # when it became a timeout
    assert event.ended_at is None and event.latency_ms is None
    assert [p.txn_id for p in b.in_doubt()] == ["t1"] and b.open_count() == 0


@pytest.mark.parametrize("outcome", ["approved", "declined"])
def test_a_late_settling_end_is_recorded_as_late_and_clears_the_doubt(outcome: str) -> None:
    b = book()
    do(b, b.submit(start(), T0))
    do(b, b.expire(T0 + TIMEOUT)[0])
    change = do(b, b.submit(end(outcome=outcome), T0 + 90))
    event = only_event(change)
    assert change.result == "late_end"
    assert (event.outcome, event.late, event.in_doubt) == (outcome, True, False)
    assert event.latency_ms == 90_000.0
    assert b.in_doubt() == [] and change.counts == {outcome: 1, "late": 1}


@pytest.mark.parametrize("outcome", ["timeout", "error"])
def test_a_late_end_that_settles_nothing_keeps_the_doubt(outcome: str) -> None:
    b = book()
    do(b, b.submit(start(), T0))
    do(b, b.expire(T0 + TIMEOUT)[0])
    event = only_event(do(b, b.submit(end(outcome=outcome), T0 + 90)))
    assert (event.late, event.in_doubt) == (True, True)
    assert [p.txn_id for p in b.in_doubt()] == ["t1"]
    # a later settling end still resolves it
    event = only_event(do(b, b.submit(end(outcome="declined", response_code="05"), T0 + 95)))
    assert (event.late, event.in_doubt) == (True, False)


def test_an_end_after_the_deadline_before_the_timer_ran_gets_both_events() -> None:
    b = book()
    do(b, b.submit(start(), T0))
    change = do(b, b.submit(end(), T0 + TIMEOUT + 1))
    timeout, late = change.events
    assert (timeout.outcome, timeout.in_doubt) == ("timeout", True)
    assert (late.outcome, late.late, late.in_doubt) == ("approved", True, False)
    assert change.result == "late_end"
    assert change.counts == {"timeout": 1, "approved": 1, "late": 1}


def test_the_pos_reporting_a_timeout_puts_the_payment_in_doubt() -> None:
    b = book()
    do(b, b.submit(start(), T0))
    event = only_event(do(b, b.submit(end(outcome="timeout"), T0 + 30)))
    assert (event.in_doubt, event.late, event.latency_ms) == (True, False, 30_000.0)
    assert b.expire(T0 + 1000) == []  # no second timeout
    event = only_event(do(b, b.submit(end(outcome="approved"), T0 + 40)))
    assert (event.late, event.in_doubt) == (True, False)


@pytest.mark.parametrize("resolution", ["reversed", "charged", "not_charged"])
def test_a_resolution_clears_the_doubt_once(resolution: str) -> None:
    b = book()
    do(b, b.submit(start(), T0))
    do(b, b.expire(T0 + TIMEOUT)[0])
    change = do(b, b.resolve("t1", resolution, T0 + 100))
    event = only_event(change)
    assert change.result == "resolved" and change.counts == {"resolved": 1}
    assert (event.outcome, event.in_doubt, event.resolution) == ("timeout", False, resolution)
    assert b.in_doubt() == []
    # the same resolution again is a duplicate; another one is a conflict
    again = b.resolve("t1", resolution, T0 + 101)
    assert again.result == "duplicate" and not again.stores and again.events == ()
    other = "charged" if resolution != "charged" else "reversed"
    with pytest.raises(PaymentError) as err:
        b.resolve("t1", other, T0 + 102)
    assert err.value.status == 409


def test_resolving_an_unknown_payment_is_404_and_one_not_in_doubt_409() -> None:
    b = book()
    with pytest.raises(PaymentError) as err:
        b.resolve("nope", "reversed", T0)
    assert (err.value.status, err.value.field) == (404, "txn_id")
    do(b, b.submit(start(), T0))
    with pytest.raises(PaymentError, match="still open") as err:
        b.resolve("t1", "reversed", T0 + 1)
    assert err.value.status == 409
    do(b, b.submit(end(), T0 + 2))
    with pytest.raises(PaymentError, match="ended approved") as err:
        b.resolve("t1", "reversed", T0 + 3)
    assert err.value.status == 409


def test_an_end_after_a_resolution_is_recorded_late_and_settles_nothing_more() -> None:
    b = book()
    do(b, b.submit(start(), T0))
    do(b, b.expire(T0 + TIMEOUT)[0])
    do(b, b.resolve("t1", "not_charged", T0 + 100))
    event = only_event(do(b, b.submit(end(outcome="error"), T0 + 110)))
    assert (event.late, event.in_doubt) == (True, False)
    assert b.in_doubt() == []


def test_duplicates_change_nothing() -> None:
    b = book()
    s, e = start(), end(response_code="00")
    do(b, b.submit(s, T0))
    dup = b.submit(s, T0 + 1)
    assert dup.result == "duplicate" and not dup.stores
    do(b, b.submit(e, T0 + 2))
    for sub in (s, e):
        dup = b.submit(sub, T0 + 3)
        assert (dup.result, dup.events, dup.stores) == ("duplicate", (), False)
    # also a late end posted twice
    do(b, b.submit(start("t2"), T0))
    do(b, b.expire(T0 + TIMEOUT)[0])
    late = end("t2", "declined")
    do(b, b.submit(late, T0 + 70))
    assert b.submit(late, T0 + 71).result == "duplicate"


def test_a_second_start_may_add_fields_but_not_contradict() -> None:
    b = book()
    do(b, b.submit(Submission("t1", {"acquirer": "acq-a"}), T0))
    change = do(b, b.submit(Submission("t1", {"acquirer": "acq-a", "stan": "000042"}), T0 + 1))
    assert change.result == "updated" and b.get("t1") is not None
    assert b.get("t1").values["stan"] == "000042"  # type: ignore[union-attr]
    assert b.next_deadline() == T0 + TIMEOUT  # the deadline does not move
    with pytest.raises(PaymentError) as err:
        b.submit(Submission("t1", {"acquirer": "acq-b"}), T0 + 2)
    assert (err.value.status, err.value.field) == (409, "acquirer")


def test_another_end_for_a_payment_that_ended_on_time_is_a_conflict() -> None:
    b = book()
    do(b, b.submit(end(response_code="00", amount_minor=1250), T0))
    with pytest.raises(PaymentError) as err:
        b.submit(end(outcome="declined"), T0 + 1)
    assert err.value.status == 409
    with pytest.raises(PaymentError) as err:
        b.submit(end(amount_minor=999), T0 + 1)
    assert (err.value.status, err.value.field) == (409, "amount_minor")


def test_technical_codes_mark_declines_and_errors_only() -> None:
    b = book()
    for i, (outcome, code, technical) in enumerate(
        [
            ("declined", "91", True),
            ("error", "96", True),
            ("declined", "05", False),
            ("approved", "00", False),
            ("declined", None, False),
        ]
    ):
        values: dict[str, Value] = {} if code is None else {"response_code": code}
        event = only_event(do(b, b.submit(end(f"t{i}", outcome, **values), T0)))
        assert event.technical is technical, (outcome, code)


def test_ended_payments_are_forgotten_after_a_day_in_doubt_ones_kept() -> None:
    b = book()
    do(b, b.submit(end("done"), T0))
    do(b, b.submit(start("doubt"), T0))
    do(b, b.expire(T0 + TIMEOUT)[0])
    assert b.stale(T0 + KEEP_CLOSED_S - 1) == []
    assert b.stale(T0 + KEEP_CLOSED_S + 1) == ["done"]


def test_undo_restores_the_book() -> None:
    b = book()
    do(b, b.submit(start(), T0))
    before = b.get("t1")
    change = b.submit(end(), T0 + 1)
    b.apply(change)
    b.undo(change)
    assert b.get("t1") == before and b.open_count() == 1


# -- random histories -----------------------------------------------------------

IDS = ("a", "b", "c")
OUTCOMES = ("approved", "declined", "timeout", "error")

ops = st.one_of(
    st.tuples(st.just("start"), st.sampled_from(IDS), st.sampled_from(("acq-a", "acq-b"))),
    st.tuples(st.just("end"), st.sampled_from(IDS), st.sampled_from(OUTCOMES)),
    st.tuples(st.just("wait"), st.floats(0, 2 * TIMEOUT)),
    st.tuples(st.just("expire")),
    st.tuples(
        st.just("resolve"), st.sampled_from(IDS), st.sampled_from(("reversed", "not_charged"))
    ),
    st.tuples(st.just("restart")),
)


def _step(b: Book, op: tuple[Any, ...], now: float) -> list[Change]:
    kind = op[0]
    if kind == "start":
        return [b.submit(Submission(op[1], {"acquirer": op[2]}), now)]
    if kind == "end":
        return [b.submit(Submission(op[1], {"outcome": op[2]}), now)]
    if kind == "expire":
        return b.expire(now)
    if kind == "resolve":
        return [b.resolve(op[1], op[2], now)]
    return []


def _restart(b: Book) -> Book:
    """A new book from what the spool would hold: every payment as JSON."""
    rows = [Payment.from_json(_roundtrip(p.to_json())) for p in _all(b)]
    return book(payments=rows)


def _roundtrip(doc: Mapping[str, Any]) -> dict[str, Any]:
    import orjson

    return orjson.loads(orjson.dumps(doc))  # type: ignore[no-any-return]


def _all(b: Book) -> list[Payment]:
    return [p for t in IDS if (p := b.get(t)) is not None]


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=40))
def test_random_histories_keep_the_invariants(history: list[tuple[Any, ...]]) -> None:
    b = book()
    now = T0
    events: dict[str, list[Txn]] = {t: [] for t in IDS}
    for op in history:
        if op[0] == "wait":
            now += op[1]
            continue
        if op[0] == "restart":
            b = _restart(b)
            continue
        try:
            changes = _step(b, op, now)
        except PaymentError as err:
            assert err.status in (404, 409)
            continue
        for change in changes:
            b.apply(change)
            events[change.txn_id].extend(change.events)
            if change.result == "duplicate":
                assert change.events == () and not change.stores
        # After the timer ran, nothing open is past its deadline.
        if op[0] == "expire":
            deadline = b.next_deadline()
            assert deadline is None or deadline > now
    for txn_id, txns in events.items():
        timeouts = [i for i, e in enumerate(txns) if e.outcome == "timeout" and not e.late]
        # at most one timeout before any late end; a late end follows a timeout
        first_timeout = timeouts[0] if timeouts else len(txns)
        for i, event in enumerate(txns):
            assert event.late == (i > first_timeout and event.resolution is None), (txn_id, txns)
            if event.outcome == "timeout" and not event.late and event.resolution is None:
                assert event.in_doubt
            if event.resolution is not None:
                assert not event.in_doubt
            if event.late and event.outcome in ("approved", "declined"):
                assert not event.in_doubt
        payment = b.get(txn_id)
        # the book says in doubt exactly when the last word left it in doubt
        if payment is not None and txns:
            last = txns[-1]
            settled_before = any(
                e.resolution is not None or (e.late and e.outcome in ("approved", "declined"))
                for e in txns[:-1]
            )
            assert (payment.state == "in_doubt") == (last.in_doubt and not settled_before)
