"""SqliteStorage on real SQLite files in tmp_path."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import protocol
from collector.storage import (
    SchemaTooNewError,
    SqliteStorage,
    StorageError,
    TokenInfo,
    hash_token,
    storage_for,
)
from collector.storage.sqlite_schema import LATEST, MIGRATIONS, migrate, schema_version
from protocol.fastwire import WireReport, wire_report
from tests.collector.wire import make_report as make_typed_report
from tests.collector.wire import rows


def make_report(*args: Any, **kwargs: Any) -> WireReport:
    """A report as the collector's ingest receives it (validated rows)."""
    return wire_report(make_typed_report(*args, **kwargs))


AGENT = TokenInfo("agent", terminal_id="T-1", store_id="S-1")


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    store = SqliteStorage(str(tmp_path / "collector.db"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _hold_writer(storage: SqliteStorage) -> tuple[threading.Event, asyncio.Task[bool]]:
    """Keep the writer thread busy until the returned gate is set, so jobs pile up."""
    entered, gate = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> bool:
        entered.set()
        return gate.wait(30)

    blocker = asyncio.create_task(storage.writer.read(hold))
    assert await asyncio.to_thread(entered.wait, 30)
    return gate, blocker


async def _until_queued(storage: SqliteStorage, n: int) -> None:
    for _ in range(3000):
        if storage.writer.pending >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {storage.writer.pending} of {n} jobs queued")


async def test_open_creates_the_schema_durably(storage: SqliteStorage, tmp_path: Path) -> None:
    def pragmas(conn: sqlite3.Connection) -> tuple[str, int, int]:
        return (
            conn.execute("PRAGMA journal_mode").fetchone()[0],
            conn.execute("PRAGMA synchronous").fetchone()[0],
            conn.execute("PRAGMA busy_timeout").fetchone()[0],
        )

    journal, synchronous, busy = await storage.writer.read(pragmas)
    assert (journal, synchronous) == ("wal", 2)  # 2 = FULL
    assert busy > 0
    conn = sqlite3.connect(tmp_path / "collector.db")
    try:
        assert schema_version(conn) == LATEST
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"tokens", "events", "terminals", "schema_migrations"} <= tables
    finally:
        conn.close()
    await storage.ping()
    assert await storage.event_count() == 0


async def test_ingest_stores_once_and_acks_every_seq(storage: SqliteStorage) -> None:
    first = await storage.ingest(AGENT, make_report([1, 2, 3]))
    again = await storage.ingest(AGENT, make_report([1, 2, 3]))
    overlap = await storage.ingest(AGENT, make_report([2, 3, 4, 5]))

    assert first == protocol.Ack(acked=(1, 2, 3), stored=3, duplicates=0)
    assert again == protocol.Ack(acked=(1, 2, 3), stored=0, duplicates=3)
    assert overlap == protocol.Ack(acked=(2, 3, 4, 5), stored=2, duplicates=2)
    assert await storage.event_count() == 5


async def test_same_seq_from_another_agent_is_not_a_duplicate(storage: SqliteStorage) -> None:
    await storage.ingest(AGENT, make_report([1, 2], agent_id="agent-1"))
    ack = await storage.ingest(AGENT, make_report([1, 2], agent_id="agent-2"))  # reinstalled
    assert ack.stored == 2
    assert await storage.event_count() == 4


async def test_terminal_row_follows_the_agent(storage: SqliteStorage, tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    await storage.ingest(AGENT, make_report([1], version="0.1.0"))
    (first,) = rows(db, "SELECT agent_version, first_seen, last_seen FROM terminals")
    await storage.ingest(AGENT, make_report([], version="0.2.0"))  # empty: still a sign of life
    (second,) = rows(db, "SELECT agent_version, first_seen, last_seen FROM terminals")
    assert second[0] == "0.2.0"
    assert second[1] == first[1]
    assert second[2] > first[2]


async def test_the_backlog_goes_into_the_terminal_row(
    storage: SqliteStorage, tmp_path: Path
) -> None:
    db = tmp_path / "collector.db"

    def report(seqs: list[int], backlog: int | None, terminal: str = "T-1") -> WireReport:
        typed = make_typed_report(seqs, terminal_id=terminal, agent_id=f"agent-{terminal}")
        return wire_report(dataclasses.replace(typed, backlog=backlog))

    def backlogs() -> dict[str, int | None]:
        return dict(rows(db, "SELECT terminal_id, spool_backlog FROM terminals"))

    await storage.ingest(AGENT, report([1, 2], 40))  # a new terminal
    await storage.ingest(TokenInfo("agent", "T-2", "S-1"), report([1], None, "T-2"))
    assert backlogs() == {"T-1": 40, "T-2": None}  # an old agent: nothing said
    await storage.ingest(AGENT, report([1, 2], 38))  # a resend: all duplicates, still news
    await storage.ingest(AGENT, report([], None))  # an old agent's sign of life
    assert backlogs() == {"T-1": 38, "T-2": None}
    await storage.ingest(AGENT, report([3], 0))
    await storage.ingest(TokenInfo("agent", "T-2", "S-1"), report([2], 5, "T-2"))
    assert backlogs() == {"T-1": 0, "T-2": 5}


async def test_ingest_refuses_a_token_for_another_terminal(storage: SqliteStorage) -> None:
    other = TokenInfo("agent", terminal_id="T-2", store_id="S-1")
    with pytest.raises(ValueError, match="terminal_id 'T-1'"):
        await storage.ingest(other, make_report([1]))
    with pytest.raises(ValueError, match="viewer token"):
        await storage.ingest(TokenInfo("viewer", name="it"), make_report([1]))
    assert await storage.event_count() == 0


async def test_concurrent_ingests_share_one_commit(storage: SqliteStorage) -> None:
    """Reports queued while the writer is busy commit together, and every caller gets its ack."""
    gate, blocker = await _hold_writer(storage)
    commits = storage.writer.commits
    n = 40
    tasks = [
        asyncio.create_task(
            storage.ingest(AGENT, make_report(range(i * 10 + 1, i * 10 + 11), agent_id=f"a{i % 3}"))
        )
        for i in range(n)
    ]
    await _until_queued(storage, n)
    gate.set()
    acks = await asyncio.gather(*tasks)
    await blocker

    for i, ack in enumerate(acks):
        assert ack.acked == tuple(range(i * 10 + 1, i * 10 + 11))
        assert (ack.stored, ack.duplicates) == (10, 0)
    assert await storage.event_count() == n * 10
    assert storage.writer.commits == commits + 1  # one transaction for all 40 (max_group 64)


async def test_a_failing_job_in_a_group_fails_alone(storage: SqliteStorage) -> None:
    gate, blocker = await _hold_writer(storage)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    good1 = asyncio.create_task(storage.ingest(AGENT, make_report([1, 2])))
    bad = asyncio.create_task(storage.writer.write(broken))
    good2 = asyncio.create_task(storage.ingest(AGENT, make_report([3])))
    await _until_queued(storage, 3)
    gate.set()
    await blocker

    assert (await good1).stored == 2
    assert (await good2).stored == 1
    with pytest.raises(StorageError, match="no such table") as err:
        await bad
    assert isinstance(err.value.__cause__, sqlite3.OperationalError)
    assert await storage.event_count() == 3


async def test_tokens_are_hashed_and_found(storage: SqliteStorage, tmp_path: Path) -> None:
    token = await storage.create_token("agent", terminal_id="T-1", store_id="S-1")
    viewer = await storage.create_token("viewer", name="central-it")

    assert token != viewer and len(token) >= 43
    assert await storage.lookup_token(token) == AGENT
    assert await storage.lookup_token(viewer) == TokenInfo("viewer", name="central-it")
    assert await storage.lookup_token("not-a-token") is None
    assert await storage.lookup_token(token[:-1]) is None
    stored = rows(tmp_path / "collector.db", "SELECT token_hash FROM tokens ORDER BY created_at")
    assert {r[0] for r in stored} == {hash_token(token), hash_token(viewer)}


async def test_token_created_by_another_process_is_found(
    storage: SqliteStorage, tmp_path: Path
) -> None:
    assert await storage.lookup_token("x") is None  # the cache is warm and knows nothing
    other = SqliteStorage(str(tmp_path / "collector.db"))  # as `token create` does
    await other.open()
    token = await other.create_token("agent", terminal_id="T-9", store_id="S-9")
    await other.close()

    assert await storage.lookup_token(token) == TokenInfo("agent", "T-9", "S-9")


@pytest.mark.parametrize(
    ("kind", "kwargs", "says"),
    [
        ("agent", {"terminal_id": "T-1"}, "store_id"),
        ("agent", {"store_id": "S-1"}, "terminal_id"),
        ("agent", {"terminal_id": "", "store_id": "S"}, "terminal_id"),
        ("agent", {"terminal_id": "T" * 129, "store_id": "S"}, "longer than 128"),
        ("viewer", {}, "name"),
        ("admin", {"name": "x"}, "kind"),
    ],
)
async def test_create_token_validates(
    storage: SqliteStorage, kind: str, kwargs: dict[str, str], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        await storage.create_token(kind, **kwargs)  # type: ignore[arg-type]


async def test_old_database_is_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    assert migrate(conn, MIGRATIONS[:1]) == (0, 1)
    conn.execute(
        "INSERT INTO tokens (token_hash, kind, terminal_id, store_id, created_at)"
        " VALUES (?, 'agent', 'T-1', 'S-1', '2026-01-01T00:00:00Z')",
        (hash_token("old-token"),),
    )
    conn.close()

    storage = SqliteStorage(str(db))
    await storage.open()
    try:
        assert await storage.lookup_token("old-token") == AGENT
        assert (await storage.ingest(AGENT, make_report([1]))).stored == 1
    finally:
        await storage.close()
    assert rows(db, "SELECT version FROM schema_migrations ORDER BY version") == [
        (v,) for v in range(1, LATEST + 1)
    ]
    indexes = {r[0] for r in rows(db, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "events_terminal_ts" in indexes


async def test_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    conn = sqlite3.connect(db, isolation_level=None)
    migrate(conn)
    conn.execute("INSERT INTO schema_migrations VALUES (99, '2030-01-01T00:00:00Z')")
    conn.close()

    storage = SqliteStorage(str(db))
    with pytest.raises(SchemaTooNewError, match=r"version 99 .* newer posmon"):
        await storage.open()
    await storage.close()  # harmless after a failed open
    assert rows(db, "SELECT max(version) FROM schema_migrations") == [(99,)]


@pytest.mark.parametrize("kind", ["garbage", "missing-dir"])
async def test_unopenable_database_is_a_storage_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "garbage.db"
    if kind == "garbage":
        path.write_bytes(b"not a database " * 200)
    else:
        path = tmp_path / "no" / "such" / "dir" / "c.db"
    storage = storage_for(str(path))
    with pytest.raises(StorageError, match=str(path)):
        await storage.open()


async def test_closed_storage_refuses_work(tmp_path: Path) -> None:
    storage = SqliteStorage(str(tmp_path / "c.db"))
    await storage.open()
    await storage.ingest(AGENT, make_report([1]))
    await storage.close()
    await storage.close()  # twice is fine
    with pytest.raises(StorageError, match="not open"):
        await storage.ingest(AGENT, make_report([2]))
    with pytest.raises(StorageError):
        await storage.ping()
    # what was acknowledged is in the file
    assert rows(tmp_path / "c.db", "SELECT seq FROM events") == [(1,)]


def test_new_tokens_never_look_like_a_command_line_option() -> None:
    from collector.storage.base import new_token

    tokens = [new_token() for _ in range(2000)]  # about 31 would start with "-" otherwise
    assert not any(t.startswith("-") for t in tokens)
    assert len(set(tokens)) == len(tokens) and all(len(t) == 43 for t in tokens)
