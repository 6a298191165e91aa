"""Payments on a real spool file: durable answers, group commit, checkpoints, restarts."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from agent.pan_guard import PanGuard
from agent.payments import PaymentError, Payments
from agent.payments.settings import PaymentsSettings
from agent.spool import Spool, SpoolError
from protocol import Event

T = TypeVar("T")
T0 = 1_800_000_000.0


@dataclass
class Env:
    """A real spool on its own thread, as the agent runs it, with a switch to make
    writes fail and a count of the transactions written."""

    path: Path
    spool: Spool
    executor: ThreadPoolExecutor
    fail_writes: bool = False
    #: raised instead of writing (a bug, not a full disk)
    fail_with: Exception | None = None
    writes: int = 0
    written: list[Event] = field(default_factory=list)

    async def call(self, fn: Callable[[Spool], T]) -> T:
        if self.fail_writes:
            # Fail the way a full disk fails: inside the spool's own write.
            def failing(s: Spool) -> T:
                raise SpoolError(f"{self.path}: append failed: database or disk is full")

            fn = failing
        if self.fail_with is not None:
            raise self.fail_with
        self.writes += 1
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, self.spool)

    async def after_write(self, events: Any) -> None:
        self.written.extend(events)

    def payments(self, clock: Callable[[], float] = lambda: T0, **kw: Any) -> Payments:
        settings = PaymentsSettings(timeout_s=kw.pop("timeout_s", 60.0))
        return Payments(
            settings, self.call, after_write=self.after_write, guard=PanGuard(), clock=clock
        )

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.path)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def txns(self) -> list[dict[str, Any]]:
        return [orjson.loads(b) for (b,) in self.rows("SELECT body FROM events WHERE kind='txn'")]

    def meta(self, key: str) -> str | None:
        found = self.rows("SELECT value FROM meta WHERE key = ?", key)
        return found[0][0] if found else None


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    spool = Spool(tmp_path / "spool.db", max_bytes=64 << 20, max_age_s=86400)
    spool.open()
    executor = ThreadPoolExecutor(max_workers=1)
    yield Env(tmp_path / "spool.db", spool, executor)
    executor.shutdown()
    spool.close()


@pytest.fixture
async def payments(env: Env) -> AsyncIterator[Payments]:
    p = env.payments()
    await p.load()
    yield p
    await p.close()


async def test_an_answer_means_the_event_and_the_row_are_in_the_file(
    env: Env, payments: Payments
) -> None:
    assert await payments.submit({"txn_id": "t1", "acquirer": "a"}, source="api") == "started"
    [(state, body)] = env.rows("SELECT state, body FROM payments")
    assert state == "open" and orjson.loads(body)["values"]["acquirer"] == "a"
    assert env.txns() == []
    assert await payments.submit({"txn_id": "t1", "outcome": "approved"}, source="api") == "ended"
    [txn] = env.txns()
    assert (txn["txn_id"], txn["outcome"], txn["acquirer"]) == ("t1", "approved", "a")
    assert env.rows("SELECT state FROM payments") == [("closed",)]
    assert env.meta("payments.count.approved") == "1"
    assert [e.kind for e in env.written] == ["txn"]  # the agent is told (uplink wake)


async def test_bad_input_stores_nothing(env: Env, payments: Payments) -> None:
    before = env.writes
    for data in ({"txn_id": "t1", "amount_minor": -1}, {"txn_id": "t1", "pan": "4111"}):
        with pytest.raises(PaymentError):
            await payments.submit(data, source="api", checkpoint={"logtail:/x": "1:10"})
    assert env.writes == before
    assert env.rows("SELECT count(*) FROM payments") == [(0,)]
    assert env.meta("logtail:/x") is None
    assert payments.status_json()["sources"]["api"] == {"accepted": 0, "refused": 2}


async def test_a_duplicate_stores_nothing_but_its_checkpoint(env: Env, payments: Payments) -> None:
    report = {"txn_id": "t1", "outcome": "declined", "response_code": "91"}
    assert await payments.submit(report, source="log:/x", checkpoint={"logtail:/x": "7:100"}) == (
        "ended"
    )
    assert env.meta("logtail:/x") == "7:100"
    assert await payments.submit(report, source="log:/x", checkpoint={"logtail:/x": "7:200"}) == (
        "duplicate"
    )
    assert env.meta("logtail:/x") == "7:200"
    assert len(env.txns()) == 1
    await payments.commit_checkpoint({"logtail:/x": "7:300"})
    assert env.meta("logtail:/x") == "7:300"


async def test_the_checkpoint_is_in_the_same_transaction_as_the_payment(
    env: Env, payments: Payments
) -> None:
    env.fail_writes = True
    with pytest.raises(PaymentError) as err:
        await payments.submit(
            {"txn_id": "t1", "outcome": "approved"}, source="log:/x", checkpoint={"k": "1"}
        )
    assert err.value.status == 503
    assert env.meta("k") is None and env.txns() == []
    # the book was taken back: the retry is a new payment, not a duplicate
    assert payments.book.get("t1") is None
    assert payments.status_json()["spool_error"] is not None
    env.fail_writes = False
    assert (
        await payments.submit(
            {"txn_id": "t1", "outcome": "approved"}, source="log:/x", checkpoint={"k": "1"}
        )
        == "ended"
    )
    assert env.meta("k") == "1" and len(env.txns()) == 1
    assert payments.status_json()["spool_error"] is None


async def test_concurrent_reports_share_transactions_and_all_are_durable(
    env: Env, payments: Payments
) -> None:
    before = env.writes
    results = await asyncio.gather(
        *(
            payments.submit(
                {"txn_id": f"t{i}", "outcome": "approved", "amount_minor": i},
                source="api",
                checkpoint={"cp": str(i)},
            )
            for i in range(300)
        )
    )
    assert results == ["ended"] * 300
    assert env.writes - before < 300 / 10  # group commit: far fewer transactions
    assert sorted(t["amount_minor"] for t in env.txns()) == list(range(300))
    assert env.meta("cp") == "299"  # the last one given wins, as the caller ordered them


async def test_a_conflict_in_a_batch_fails_only_its_own_report(
    env: Env, payments: Payments
) -> None:
    await payments.submit({"txn_id": "t1", "outcome": "approved", "amount_minor": 1}, source="api")
    results = await asyncio.gather(
        payments.submit({"txn_id": "t1", "outcome": "approved", "amount_minor": 2}, source="api"),
        payments.submit({"txn_id": "t2", "outcome": "approved"}, source="api"),
        return_exceptions=True,
    )
    assert isinstance(results[0], PaymentError) and results[0].status == 409
    assert results[1] == "ended"
    assert sorted(t["txn_id"] for t in env.txns()) == ["t1", "t2"]


async def test_an_open_payment_times_out_after_a_restart_measured_from_its_start(
    env: Env,
) -> None:
    first = env.payments(clock=lambda: T0, timeout_s=60)
    await first.load()
    await first.submit({"txn_id": "t1", "acquirer": "a", "amount_minor": 500}, source="api")
    # the agent dies; it comes back 5 minutes later
    later = env.payments(clock=lambda: T0 + 300, timeout_s=60)
    await later.load()
    assert later.status_json()["open"] == 1
    stop = asyncio.Event()
    timer = asyncio.create_task(later.run(stop))
    for _ in range(500):
        if env.txns():
            break
        await asyncio.sleep(0.01)
    stop.set()
    await timer
    [txn] = env.txns()
    assert (txn["outcome"], txn["in_doubt"], txn["acquirer"]) == ("timeout", True, "a")
    assert txn["ts"] == "2027-01-15T08:01:00.000000Z"  # T0 + 60 s: the deadline
    status = later.status_json()
    assert status["open"] == 0 and status["counts"]["timeout"] == 1
    assert [d["txn_id"] for d in status["in_doubt"]] == ["t1"]
    # and a third life still knows it is in doubt, and takes a resolution
    third = env.payments(clock=lambda: T0 + 400)
    await third.load()
    assert third.status_json()["in_doubt_total"] == 1
    assert third.status_json()["counts"]["timeout"] == 1  # counters are durable
    assert await third.resolve("t1", "reversed", source="api") == "resolved"
    assert env.txns()[-1]["resolution"] == "reversed"


async def test_the_timer_wakes_for_a_start_taken_while_it_sleeps(env: Env) -> None:
    payments = env.payments(timeout_s=0.05, clock=__import__("time").time)
    await payments.load()
    stop = asyncio.Event()
    timer = asyncio.create_task(payments.run(stop))
    await asyncio.sleep(0)  # the timer sleeps with nothing open
    await payments.submit({"txn_id": "t1"}, source="api")
    for _ in range(1000):
        if env.txns():
            break
        await asyncio.sleep(0.01)
    stop.set()
    await timer
    assert [t["outcome"] for t in env.txns()] == ["timeout"]


async def test_old_ended_payments_are_forgotten_by_the_timer(env: Env) -> None:
    now = [T0]
    payments = env.payments(clock=lambda: now[0])
    await payments.load()
    await payments.submit({"txn_id": "old", "outcome": "approved"}, source="api")
    now[0] = T0 + 2 * 86400
    stop = asyncio.Event()
    timer = asyncio.create_task(payments.run(stop))  # prunes first thing
    for _ in range(500):
        if env.rows("SELECT count(*) FROM payments") == [(0,)]:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await timer
    assert env.rows("SELECT count(*) FROM payments") == [(0,)]
    assert payments.book.get("old") is None


async def test_an_unexpected_failure_takes_the_batch_back_and_is_told(
    env: Env, payments: Payments
) -> None:
    env.fail_with = RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        await payments.submit({"txn_id": "t1"}, source="api")
    assert payments.book.get("t1") is None and payments.status_json()["open"] == 0
    env.fail_with = None
    assert await payments.submit({"txn_id": "t1"}, source="api") == "started"
    assert env.rows("SELECT txn_id, state FROM payments") == [("t1", "open")]
