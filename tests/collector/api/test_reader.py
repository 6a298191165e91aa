"""The API's read-only connections on real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from collector.api.reader import SqliteReader
from collector.storage import StorageError
from collector.storage.sqlite_writer import connect


def _db(path: Path) -> sqlite3.Connection:
    conn = connect(str(path))  # WAL, as the collector's writer opens it
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.execute("INSERT INTO t VALUES (1)")
    return conn


async def test_reads_run_while_a_writer_holds_its_transaction(tmp_path: Path) -> None:
    writer = _db(tmp_path / "odd name #1?.db")
    reader = SqliteReader(str(tmp_path / "odd name #1?.db"), workers=2)
    reader.start()
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO t VALUES (2)")
        # the write is not committed: the reader sees the last snapshot, without waiting
        seen = await reader.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0])
        assert seen == 1
        writer.execute("COMMIT")
        seen = await reader.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0])
        assert seen == 2
    finally:
        await reader.stop()
        writer.close()


async def test_the_reader_cannot_write(tmp_path: Path) -> None:
    writer = _db(tmp_path / "c.db")
    reader = SqliteReader(str(tmp_path / "c.db"))
    reader.start()
    try:
        with pytest.raises(StorageError, match=r"c\.db"):
            await reader.read(lambda c: c.execute("INSERT INTO t VALUES (3)"))
        rows = writer.execute("SELECT count(*) FROM t").fetchone()[0]
        assert rows == 1
    finally:
        await reader.stop()
        writer.close()


async def test_a_missing_database_is_a_storage_error(tmp_path: Path) -> None:
    reader = SqliteReader(str(tmp_path / "absent.db"))
    reader.start()
    try:
        with pytest.raises(StorageError):
            await reader.read(lambda c: c.execute("SELECT 1").fetchone())
        assert not (tmp_path / "absent.db").exists()  # read-only: never created
    finally:
        await reader.stop()


async def test_a_stopped_reader_refuses(tmp_path: Path) -> None:
    writer = _db(tmp_path / "c.db")
    reader = SqliteReader(str(tmp_path / "c.db"))
    reader.start()
    assert await reader.read(lambda c: c.execute("SELECT x FROM t").fetchone()[0]) == 1
    await reader.stop()
    await reader.stop()  # twice is fine
    with pytest.raises(StorageError, match="not open"):
        await reader.read(lambda c: c.execute("SELECT 1").fetchone())
    writer.close()
