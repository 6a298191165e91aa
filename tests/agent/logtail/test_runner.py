"""Log tailing on the real payment intake and a real spool file: reports and file
positions in one transaction; refused reports and a failing spool."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from agent.logtail import tailer as tailer_module
from agent.logtail.runner import LogTails
from agent.logtail.source import Position
from agent.pan_guard import PanGuard
from agent.payments import Payments
from agent.payments.settings import PaymentsSettings
from agent.spool import Spool, SpoolError
from tests.agent.logtail.fakes import end_line, load_spec, start_line

T = TypeVar("T")


class Env:
    """A real spool on its own thread, as the agent runs it; writes can be made to fail."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.spool = Spool(path, max_bytes=64 << 20, max_age_s=86400)
        self.spool.open()
        self.executor = ThreadPoolExecutor(max_workers=1)
        self.fail_writes = 0

    async def call(self, fn: Callable[[Spool], T]) -> T:
        if self.fail_writes:
            self.fail_writes -= 1

            def failing(s: Spool) -> T:
                raise SpoolError(f"{self.path}: append failed: database or disk is full")

            fn = failing
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, self.spool)

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

    def close(self) -> None:
        self.executor.shutdown()
        self.spool.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path / "spool.db")
    yield e
    e.close()


async def run_tails(env: Env, tails: LogTails, payments: Payments) -> None:
    """One look at every file, as the running agent takes them."""
    stop = asyncio.Event()
    for tail in tails.tails:
        if tail.follower is None:
            assert await tail.start(stop)
        assert await tail.step(stop)


async def test_payments_from_a_log_reach_the_spool_with_the_file_position(
    tmp_path: Path, env: Env
) -> None:
    log = tmp_path / "pos.log"
    log.write_text(
        start_line(1) + "noise\n" + end_line(1) + start_line(2) + end_line(2, "DECL") + "tail\n"
    )
    payments = Payments(PaymentsSettings(), env.call, guard=PanGuard())
    await payments.load()
    tails = LogTails([load_spec(tmp_path, log, start_at="beginning")], payments, env.call)
    await run_tails(env, tails, payments)
    txns = env.txns()
    assert [(t["txn_id"], t["outcome"], t["amount_minor"]) for t in txns] == [
        ("T00001", "approved", 101),
        ("T00002", "declined", 102),
    ]
    assert txns[0]["started_at"] == "2026-11-21T10:00:00.000000Z"
    assert txns[0]["latency_ms"] == 2000
    stored = env.meta(f"logtail:{log}")
    assert stored is not None
    pos = Position.decode(stored)
    assert pos is not None and pos.offset == log.stat().st_size  # the unmatched "tail" too
    (status,) = tails.status_json()
    assert status["results"] == {"ended": 2, "started": 2}
    assert (status["matched"], status["unmatched"]) == (4, 2)
    assert payments.status_json()["sources"] == {f"log:{log}": {"accepted": 4, "refused": 0}}
    for tail in tails.tails:
        tail.close()
    await payments.close()


async def test_refused_reports_are_counted_and_a_failing_spool_is_waited_out(
    tmp_path: Path, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tailer_module, "STORE_RETRY_S", 0.001)
    log = tmp_path / "pos.log"
    log.write_text(
        end_line(1, "MAYBE")  # not an outcome: 400 from the intake
        + "2026-11-21T10:00:00Z START id=T2 amount=99999999999999999 EUR\n"  # too large
        + start_line(3)
        + end_line(3)
    )
    payments = Payments(PaymentsSettings(), env.call, guard=PanGuard())
    await payments.load()
    tails = LogTails([load_spec(tmp_path, log, start_at="beginning")], payments, env.call)
    env.fail_writes = 2  # the first writes fail as on a full disk; the lines wait
    await run_tails(env, tails, payments)
    assert [t["txn_id"] for t in env.txns()] == ["T00003"]
    (status,) = tails.status_json()
    assert (status["matched"], status["rejected"]) == (4, 2)
    assert payments.status_json()["sources"][f"log:{log}"] == {"accepted": 2, "refused": 2}
    for tail in tails.tails:
        tail.close()
    await payments.close()


async def test_a_restart_on_the_same_spool_resumes_after_the_last_line(
    tmp_path: Path, env: Env
) -> None:
    log = tmp_path / "pos.log"
    log.write_text(start_line(1) + end_line(1))
    spec = load_spec(tmp_path, log, start_at="beginning")
    for lines in (start_line(2) + end_line(2), start_line(3) + end_line(3)):
        payments = Payments(PaymentsSettings(), env.call, guard=PanGuard())
        await payments.load()
        tails = LogTails([spec], payments, env.call)
        await run_tails(env, tails, payments)
        for tail in tails.tails:
            tail.close()
        await payments.close()
        with log.open("a") as f:
            f.write(lines)  # written while the agent is down
    payments = Payments(PaymentsSettings(), env.call, guard=PanGuard())
    await payments.load()
    tails = LogTails([spec], payments, env.call)
    await run_tails(env, tails, payments)
    assert [t["txn_id"] for t in env.txns()] == ["T00001", "T00002", "T00003"]
    assert tails.status_json()[0]["results"] == {"ended": 1, "started": 1}  # no duplicates
    for tail in tails.tails:
        tail.close()
    await payments.close()
