"""The spool on real SQLite files: seqs, acks, quarantine, the bound."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.spool import Spool, SpoolError
from protocol import AgentEvent, DeviceStatus, Event, HostSample, Txn, decode_event


def host(n: int = 0) -> HostSample:
    now = datetime.now(UTC)
    return HostSample(
        seq=0, ts=now, cpu_pct=float(n % 100), mem_pct=50.0, mem_available_bytes=1 << 30,
        disk_pct=40.0, disk_free_bytes=1 << 34, load1=0.1, load5=0.2, load15=0.3,
        uptime_s=1000.0, boot_time=now,
    )  # fmt: skip


def txn(n: int) -> Txn:
    return Txn(seq=0, ts=datetime.now(UTC), txn_id=f"t{n}", outcome="timeout", in_doubt=True)


def state(n: int) -> DeviceStatus:
    return DeviceStatus(
        seq=0, ts=datetime.now(UTC), device=f"printer{n}", device_kind="escpos_printer",
        state="warning", flags=("paper_near_end",),
    )  # fmt: skip


def open_spool(path: Path, **kw: object) -> Spool:
    spool = Spool(path, max_bytes=int(kw.pop("max_bytes", 64 << 20)), **kw)  # type: ignore[arg-type]
    spool.open()
    return spool


def all_seqs(spool: Spool) -> list[int]:
    batch = spool.peek(1_000_000, 1 << 40)
    return list(batch.seqs)


def test_seqs_strictly_increase_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = open_spool(path, max_age_s=3600)
    first = spool.append([host(i) for i in range(5)])
    assert first == (1, 2, 3, 4, 5)
    agent_id = spool.agent_id
    spool.ack([1, 2, 3, 4, 5])  # an empty spool must not restart the numbering
    spool.close()

    spool = open_spool(path, max_age_s=3600)
    assert spool.agent_id == agent_id
    assert spool.append([txn(1), txn(2)]) == (6, 7)
    # The stored body carries the assigned seq and decodes as the same event.
    batch = spool.peek(10, 1 << 20)
    decoded = [decode_event(json.loads(b)) for b in batch.bodies]
    assert [e.seq for e in decoded] == [6, 7]
    assert isinstance(decoded[0], Txn) and decoded[0].txn_id == "t1"


def test_a_new_spool_is_a_new_agent_identity(tmp_path: Path) -> None:
    a = open_spool(tmp_path / "a.db", max_age_s=3600)
    b = open_spool(tmp_path / "b.db", max_age_s=3600)
    assert a.agent_id and b.agent_id and a.agent_id != b.agent_id


def test_peek_respects_event_and_byte_limits_but_returns_at_least_one(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db", max_age_s=3600)
    spool.append([host(i) for i in range(20)])
    assert len(spool.peek(7, 1 << 20)) == 7
    one_size = len(spool.peek(1, 1 << 20).bodies[0])
    assert len(spool.peek(100, one_size * 3 + 1)) == 3
    assert len(spool.peek(100, 1)) == 1  # an event larger than the limit still goes alone


def test_ack_deletes_only_what_was_acknowledged(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db", max_age_s=3600)
    spool.append([host(i) for i in range(10)])
    assert spool.ack([2, 4, 99]) == 2
    assert all_seqs(spool) == [1, 3, 5, 6, 7, 8, 9, 10]


def test_quarantine_keeps_and_counts_refused_events(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = open_spool(path, max_age_s=3600)
    spool.append([host(i) for i in range(4)])
    assert spool.quarantine([2, 3], status=400, reason="events[0].ts: bad") == 2
    assert all_seqs(spool) == [1, 4]
    stats = spool.stats()
    assert stats.quarantined == 2
    spool.close()
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT seq, status, reason FROM quarantine ORDER BY seq").fetchall()
        total = db.execute("SELECT value FROM meta WHERE key='quarantined_total'").fetchone()
    assert rows == [(2, 400, "events[0].ts: bad"), (3, 400, "events[0].ts: bad")]
    assert total == ("2",)


def test_size_bound_sheds_health_first_and_payments_last(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db", max_bytes=40_000, max_age_s=3600)
    payments = spool.append([txn(i) for i in range(40)])
    states = spool.append([state(i) for i in range(20)])
    spool.append([host(i) for i in range(200)])
    assert spool.stored_bytes > spool.max_bytes

    drops = spool.enforce_bounds()

    assert spool.stored_bytes <= spool.max_bytes
    assert [d.reason for d in drops] == ["size"]
    left = set(all_seqs(spool))
    assert set(payments) <= left and set(states) <= left  # health samples paid for it all
    assert set(drops[0].by_kind) == {"host_sample"}
    dropped_hosts = drops[0].by_kind["host_sample"]
    # The oldest samples went: the survivors are the newest ones.
    host_left = sorted(s for s in left if s > states[-1])
    assert host_left == list(range(states[-1] + 1 + dropped_hosts, states[-1] + 201))
    assert spool.stats().dropped == {"host_sample": dropped_hosts}


def test_payments_go_only_when_nothing_else_is_left(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db", max_bytes=8_000, max_age_s=3600)
    spool.append([host(i) for i in range(5)])
    spool.append([state(i) for i in range(5)])
    payments = spool.append([txn(i) for i in range(100)])
    drops = spool.enforce_bounds()
    kinds = drops[0].by_kind
    assert kinds["host_sample"] == 5 and kinds["device_status"] == 5
    assert kinds["txn"] > 0
    left = all_seqs(spool)
    assert left == list(payments[kinds["txn"] :])  # the oldest payments went first
    assert spool.stored_bytes <= spool.max_bytes


def test_age_bound_drops_old_events_and_counts_them(tmp_path: Path) -> None:
    now = [1_000_000.0]
    spool = open_spool(tmp_path / "s.db", max_age_s=100, clock=lambda: now[0])
    spool.append([host(1), txn(1)])
    now[0] += 50
    kept = spool.append([AgentEvent(seq=0, ts=datetime.now(UTC), event="start")])
    now[0] += 60  # the first two are now 110 s old
    drops = spool.enforce_bounds()
    assert [(d.reason, d.by_kind) for d in drops] == [("age", {"host_sample": 1, "txn": 1})]
    assert all_seqs(spool) == list(kept)


def test_stored_bytes_are_recounted_on_open(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = open_spool(path, max_age_s=3600)
    spool.append([host(i) for i in range(10)])
    spool.quarantine([1], status=400, reason="x")
    before = spool.stored_bytes
    spool.close()
    assert open_spool(path, max_age_s=3600).stored_bytes == before > 0


def test_a_spool_from_a_newer_agent_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    open_spool(path, max_age_s=3600).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(SpoolError, match="newer"):
        open_spool(path, max_age_s=3600)


def test_an_unopenable_path_is_a_spool_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError):
        open_spool(blocker / "spool.db", max_age_s=3600)


def test_append_writes_nothing_partial_on_a_bad_event(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db", max_age_s=3600)

    class Broken(Event):
        KIND = "broken"

        @property
        def priority(self) -> int:
            raise RuntimeError("boom")

    bad = Broken(seq=0, ts=datetime.now(UTC))
    with pytest.raises(RuntimeError):
        spool.append([host(1), bad])
    assert spool.depth() == 0
    assert spool.append([host(2)]) == (1,)  # no seq was burnt
