"""The tailer: lines → PAN guard → rules → the store, with the position stored
with each report; crashes at any point neither lose nor repeat a line."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.logtail import tailer as tailer_module
from agent.logtail.source import Position
from agent.logtail.tailer import LogTail, decode
from agent.pan_guard import PanGuard
from tests.agent.logtail.fakes import Crash, FakeStore, end_line, load_spec, start_line


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "pos.log"


async def tail_once(tail: LogTail) -> None:
    stop = asyncio.Event()
    if tail.follower is None:
        assert await tail.start(stop)
    assert await tail.step(stop)


async def test_matched_lines_are_stored_with_the_position_after_them(
    tmp_path: Path, log: Path
) -> None:
    log.write_text(start_line(1) + "noise\n" + end_line(1) + end_line(2, "DECL"))
    store = FakeStore()
    tail = LogTail(load_spec(tmp_path, log, start_at="beginning"), store, PanGuard())
    await tail_once(tail)
    first, second, third = store.submitted
    assert first.data == {
        "txn_id": "T00001",
        "kind": "sale",
        "started_at": "2026-11-21T10:00:00+00:00",
        "amount_minor": "101",
        "currency": "EUR",
    }
    assert first.source == f"log:{log}"
    assert second.data == {
        "txn_id": "T00001",
        "ended_at": "2026-11-21T10:00:02+00:00",
        "outcome": "approved",
    }
    assert third.data["outcome"] == "declined"
    key = f"logtail:{log}"
    st = log.stat()
    offset = len(start_line(1)) + len("noise\n") + len(end_line(1))
    pos = Position.decode(second.checkpoint[key])
    assert pos is not None and (pos.dev, pos.ino, pos.offset) == (st.st_dev, st.st_ino, offset)
    assert Position.decode(store.meta[key]).offset == st.st_size  # type: ignore[union-attr]
    assert (tail.lines, tail.matched, tail.unmatched) == (4, 3, 1)
    assert tail.rules.matched_by == [1, 2]
    tail.close()


async def test_unmatched_lines_move_the_stored_position_once_per_chunk(
    tmp_path: Path, log: Path
) -> None:
    log.write_text("".join(f"debug line {i}\n" for i in range(5000)))
    store = FakeStore()
    tail = LogTail(load_spec(tmp_path, log, start_at="beginning"), store, PanGuard())
    await tail_once(tail)
    assert store.submitted == []
    assert tail.unmatched == 5000
    assert Position.decode(store.meta[f"logtail:{log}"]).offset == log.stat().st_size  # type: ignore[union-attr]
    assert store.saves <= 2  # per chunk read, not per line
    with log.open("a") as f:
        f.write("one more\n")
    await tail_once(tail)
    assert Position.decode(store.meta[f"logtail:{log}"]).offset == log.stat().st_size  # type: ignore[union-attr]
    tail.close()


def test_decode_counts_undecodable_bytes() -> None:
    assert decode(b"plain", "utf-8") == ("plain", 0)
    assert decode("Müller".encode(), "utf-8") == ("Müller", 0)
    assert decode(b"M\xfcller \xff\xfe", "utf-8") == ("M\ufffdller \ufffd\ufffd", 3)
    assert decode(b"M\xfcller", "latin-1") == ("Müller", 0)
    assert decode(b"a\x81b", "cp1252") == ("a\ufffdb", 1)  # 0x81 is undefined in cp1252


async def test_undecodable_bytes_are_replaced_counted_and_the_line_still_matches(
    tmp_path: Path, log: Path
) -> None:
    log.write_bytes(
        b"2026-11-21T10:00:02Z END id=T1 result=DECL Kunde M\xfcller \xff\n\xc3\x28 junk\n"
    )
    store = FakeStore()
    tail = LogTail(load_spec(tmp_path, log, start_at="beginning"), store, PanGuard())
    await tail_once(tail)
    (sub,) = store.submitted
    assert sub.data["message"] == "Kunde M\ufffdller \ufffd"
    assert tail.undecodable_bytes == 3
    assert tail.status_json()["undecodable_bytes"] == 3
    tail.close()


async def test_card_numbers_are_masked_before_any_rule_sees_them(tmp_path: Path, log: Path) -> None:
    rules = r"""
[[logfile.rule]]
pattern = 'END id=(?P<txn_id>\S+) result=(?P<outcome>\w+) (?P<message>.*)'
outcome_map = { DECL = "declined" }
[[logfile.rule]]
pattern = 'ref=(?P<txn_id>\S+) failed'
set = { outcome = "error" }
"""
    log.write_text(
        "END id=T1 result=DECL card 4111 1111 1111 1111 exp 12/27\n"
        "ref=4111111111111111 failed\n"  # a careless rule would take the PAN as the id
        "track ;4111111111111111=27121011234567890?\n"
    )
    guard = PanGuard()
    store = FakeStore()
    tail = LogTail(load_spec(tmp_path, log, rules, start_at="beginning"), store, guard)
    await tail_once(tail)
    first, second = store.submitted
    assert first.data["message"] == "card 4111 11** **** 1111 exp 12/27"
    assert second.data["txn_id"] == "411111******1111"
    assert "4111111111111111" not in repr(store.submitted)
    assert tail.masked == 3 and guard.masked_total == 3
    tail.close()


async def test_rejected_lines_are_counted_skipped_and_logged_once_per_field(
    tmp_path: Path, log: Path
) -> None:
    rules = r"""
[[logfile.rule]]
pattern = '^(?P<ended_at>\S+) END id=(?P<txn_id>\S+) result=(?P<outcome>\w+)'
outcome_map = { OK = "approved" }
"""
    log.write_text(
        "2026-11-21T10:00:02Z END id=T1 result=WEIRD\n"  # the store refuses the outcome
        "2026-11-21T10:00:02Z END id=T2 result=STRANGE\n"
        "yesterday END id=T3 result=OK\n"  # not a time
        "2026-11-21T10:00:02Z END id=T4 result=OK\n"
    )
    store = FakeStore()
    tail = LogTail(load_spec(tmp_path, log, rules, start_at="beginning"), store, PanGuard())
    with capture_logs() as logs:
        await tail_once(tail)
    assert store.ids() == ["T4:end"]
    assert (tail.matched, tail.rejected) == (4, 3)
    rejected = [e for e in logs if e["event"] == "logline_rejected"]
    assert [(e["field"], e["offset"]) for e in rejected] == [("outcome", 44), ("ended_at", 120)]
    assert "expected an RFC 3339 time, got 'yesterday'" in rejected[1]["reason"]
    assert Position.decode(store.meta[f"logtail:{log}"]).offset == log.stat().st_size  # type: ignore[union-attr]
    tail.close()


async def test_a_failing_store_is_retried_with_the_same_line(
    tmp_path: Path, log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tailer_module, "STORE_RETRY_S", 0.001)
    log.write_text(start_line(1) + end_line(1))
    store = FakeStore(fail_next=3)
    tail = LogTail(load_spec(tmp_path, log, start_at="beginning"), store, PanGuard())
    with capture_logs() as logs:
        await tail_once(tail)
    assert store.ids() == ["T00001:start", "T00001:end"]
    events = [e["event"] for e in logs]
    assert events.count("logtail_store_failed") == 1
    assert events.count("logtail_store_recovered") == 1
    tail.close()


@pytest.mark.parametrize("after_commit", [False, True])
async def test_a_crash_during_a_submit_neither_loses_nor_repeats(
    tmp_path: Path, log: Path, after_commit: bool
) -> None:
    log.write_text("".join(start_line(i) + "noise\n" + end_line(i) for i in range(10)))
    store = FakeStore(crash_on=7, crash_after_commit=after_commit)
    spec = load_spec(tmp_path, log, start_at="beginning")
    tail = LogTail(spec, store, PanGuard())
    with pytest.raises(Crash):
        await tail_once(tail)
    tail.close()
    assert len(store.submitted) == (7 if after_commit else 6)
    again = LogTail(spec, store, PanGuard())  # a new process: only the store survived
    await tail_once(again)
    store.assert_each_once([f"T{i:05d}:{p}" for i in range(10) for p in ("start", "end")])
    again.close()


async def test_start_at_end_stores_its_start_so_a_restart_skips_nothing(
    tmp_path: Path, log: Path
) -> None:
    log.write_text(start_line(0) + end_line(0))  # history
    store = FakeStore()
    spec = load_spec(tmp_path, log)  # start_at = "end"
    tail = LogTail(spec, store, PanGuard())
    await tail_once(tail)
    tail.close()
    assert store.submitted == [] and f"logtail:{log}" in store.meta
    with log.open("a") as f:
        f.write(start_line(1))  # written while the agent is down
    again = LogTail(spec, store, PanGuard())
    await tail_once(again)
    assert store.ids() == ["T00001:start"]
    again.close()


async def test_run_until_stopped_and_status(tmp_path: Path, log: Path) -> None:
    store = FakeStore()
    tail = LogTail(load_spec(tmp_path, log, poll_s=0.01), store, PanGuard())
    stop = asyncio.Event()
    task = asyncio.create_task(tail.run(stop))
    for _ in range(500):
        await asyncio.sleep(0.01)
        if tail.status_json()["state"] == "missing":
            break
    log.write_text(start_line(1) + "x\n" + end_line(1))
    for _ in range(500):
        await asyncio.sleep(0.01)
        if len(store.submitted) == 2:
            break
    stop.set()
    await asyncio.wait_for(task, 10)
    status = tail.status_json()
    assert status == status | {
        "path": str(log),
        "reading": str(log),
        "offset": log.stat().st_size,
        "lines": 3,
        "matched": 2,
        "unmatched": 1,
        "rejected": 0,
        "undecodable_bytes": 0,
        "masked": 0,
        "matched_by_rule": [1, 1],
        "results": {"ended": 1, "started": 1},
        "rotations": 0,
        "truncations": 0,
    }


# ── crashes and rotations in any order ──────────────────────────────────────


class Scenario:
    """A writer appending payment lines (rotating both ways) and a tailer that
    crashes at random submits; one rotation at most between two clean looks."""

    def __init__(self, tmp_path: Path, rng: random.Random) -> None:
        self.rng = rng
        self.log = tmp_path / "pos.log"
        self.spec = load_spec(tmp_path, self.log, start_at="beginning", poll_s=0.01)
        self.store = FakeStore()
        self.out = self.log.open("ab", buffering=0)
        self.expected: list[str] = []
        self.open_txns: list[int] = []
        self.next_id = 0
        self.rotation = 0
        self.tail: LogTail | None = None
        self.crashes = 0

    def write(self, n: int) -> None:
        for _ in range(n):
            roll = self.rng.random()
            if roll < 0.35 or not self.open_txns:
                self.next_id += 1
                self.open_txns.append(self.next_id)
                line = start_line(self.next_id).encode()
                self.expected.append(f"T{self.next_id:05d}:start")
            elif roll < 0.7:
                txn = self.open_txns.pop(self.rng.randrange(len(self.open_txns)))
                line = end_line(txn, self.rng.choice(["OK", "DECL", "TMO"])).encode()
                self.expected.append(f"T{txn:05d}:end")
            elif roll < 0.8:
                line = b"%d DEBUG \xff\xfe heartbeat\n" % self.rng.randrange(10**9)
            elif roll < 0.85:
                line = b"2026-11-21T10:00:01Z END id=X%d result=WEIRD\n" % self.rng.randrange(10**9)
            else:
                line = f"{self.rng.randrange(10**9)} INFO screen\n".encode()
            self.out.write(line)

    def rename(self) -> None:
        self.rotation += 1
        self.log.rename(self.log.with_name(f"pos.log.{self.rotation}"))

    def reopen(self) -> None:
        self.out.close()
        self.out = self.log.open("ab", buffering=0)

    def copytruncate(self) -> None:
        self.rotation += 1
        shutil.copyfile(self.log, self.log.with_name(f"pos.log.{self.rotation}"))
        os.truncate(self.log, 0)

    async def look(self, *, crash: bool) -> bool:
        """The tailer (restarted if it crashed) reads what there is; True if clean."""
        if crash:
            self.store.crash_on = self.store.calls + self.rng.randint(1, 6)
            self.store.crash_after_commit = self.rng.random() < 0.5
        stop = asyncio.Event()
        try:
            if self.tail is None:
                self.tail = LogTail(self.spec, self.store, PanGuard())
                await self.tail.start(stop)
            await self.tail.step(stop)
        except Crash:
            assert self.tail is not None
            self.tail.close()
            self.tail = None
            self.crashes += 1
            self.store.crash_on = None
            return False
        return True

    async def settle(self) -> None:
        """Look until a look ends without a crash (a crash set up earlier may still come)."""
        while not await self.look(crash=False):
            pass

    async def maybe_look(self) -> None:
        if self.rng.random() < 0.5:
            await self.look(crash=self.rng.random() < 0.5)

    async def run(self, rounds: int) -> None:
        await self.settle()  # the first start: what was written before it counts from here
        for _ in range(rounds):
            self.write(self.rng.randint(0, 30))
            await self.maybe_look()
            kind = self.rng.choice(["rename", "copytruncate", "none"])
            if kind == "rename":
                self.rename()
                self.write(self.rng.randint(0, 10))  # the writer has not reopened yet
                await self.maybe_look()
                if self.rng.random() < 0.5:
                    self.log.touch()  # logrotate's "create"
                    self.write(self.rng.randint(0, 10))
                    await self.maybe_look()
                self.reopen()
                self.write(self.rng.randint(1, 10))
            elif kind == "copytruncate":
                # A file that was empty at the last look and is copied and truncated
                # before the next one looks unchanged (a limit we document): the
                # tailer has seen a line of this file before it is truncated.
                self.write(self.rng.randint(1, 3))
                await self.settle()
                self.write(self.rng.randint(0, 10))  # lines only the copy holds
                await self.maybe_look()
                self.copytruncate()
                self.write(self.rng.randint(1, 10))
            await self.maybe_look()
            await self.settle()  # one rotation per look: the next may follow
        await self.settle()


@pytest.mark.parametrize("seed", range(40))
async def test_rotations_and_crashes_neither_lose_nor_repeat_a_line(
    tmp_path: Path, seed: int
) -> None:
    scenario = Scenario(tmp_path, random.Random(seed))
    try:
        await scenario.run(rounds=12)
    finally:
        scenario.out.close()
        if scenario.tail is not None:
            scenario.tail.close()
    scenario.store.assert_each_once(scenario.expected)
    assert scenario.crashes > 0


async def test_an_unexpected_error_restarts_from_the_stored_position(
    tmp_path: Path, log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tailer_module, "RESTART_S", 0.01)
    log.write_text(start_line(1) + end_line(1) + start_line(2) + end_line(2))

    class Flaky(FakeStore):
        async def submit(self, data: Any, *, source: str, checkpoint: Any) -> str:
            if self.calls == 2 and not getattr(self, "failed", False):
                self.failed = True
                raise RuntimeError("a bug")
            return await super().submit(data, source=source, checkpoint=checkpoint)

    store = Flaky()
    tail = LogTail(load_spec(tmp_path, log, start_at="beginning", poll_s=0.01), store, PanGuard())
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(tail.run(stop))
        for _ in range(1000):
            await asyncio.sleep(0.01)
            if len(store.submitted) == 4:
                break
        stop.set()
        await asyncio.wait_for(task, 10)
    store.assert_each_once([f"T0000{i}:{p}" for i in (1, 2) for p in ("start", "end")])
    (failed,) = [e for e in logs if e["event"] == "logtail_failed"]
    assert failed["error"] == "RuntimeError: a bug"
