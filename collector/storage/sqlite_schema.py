"""The SQLite schema as numbered migration steps, and the code that applies them.

A ``schema_migrations`` table records which steps a database has. Opening a
database applies the missing steps, in order, in one transaction (all or
nothing), and refuses a database whose version is newer than this code knows
(it was written by a newer posmon; downgrading would lose data silently).

Append new steps to :data:`MIGRATIONS`; never edit a released one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from protocol import format_datetime

from .base import SchemaTooNewError

#: Step N (1-based) is ``MIGRATIONS[N - 1]``: statements run in order.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: tokens, events, terminals
    (
        """
        CREATE TABLE tokens (
            token_hash  TEXT PRIMARY KEY,            -- sha256 hex of the token
            kind        TEXT NOT NULL CHECK (kind IN ('agent', 'viewer')),
            terminal_id TEXT,
            store_id    TEXT,
            name        TEXT,
            created_at  TEXT NOT NULL,
            CHECK ((kind = 'agent' AND terminal_id IS NOT NULL AND store_id IS NOT NULL)
                OR (kind = 'viewer' AND name IS NOT NULL))
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE events (
            agent_id    TEXT NOT NULL,
            seq         INTEGER NOT NULL,
            terminal_id TEXT NOT NULL,
            store_id    TEXT NOT NULL,
            kind        TEXT NOT NULL,
            ts          TEXT NOT NULL,               -- ISO 8601 UTC, as on the wire
            received_at TEXT NOT NULL,
            body        TEXT NOT NULL,               -- protocol.encode_event(event)
            PRIMARY KEY (agent_id, seq)
        )
        """,
        """
        CREATE TABLE terminals (
            terminal_id   TEXT PRIMARY KEY,
            store_id      TEXT NOT NULL,
            agent_id      TEXT NOT NULL,
            agent_version TEXT NOT NULL,
            first_seen    TEXT NOT NULL,
            last_seen     TEXT NOT NULL
        )
        """,
    ),
    # 2: indexes the query API reads by
    (
        "CREATE INDEX events_terminal_ts ON events (terminal_id, ts)",
        "CREATE INDEX terminals_store ON terminals (store_id)",
    ),
)

LATEST = len(MIGRATIONS)

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL
)
"""


def schema_version(conn: sqlite3.Connection) -> int:
    """The highest step applied to this database (0 for a new one)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def _refuse_if_newer(version: int, known: int) -> None:
    if version > known:
        raise SchemaTooNewError(
            f"database schema is at version {version} but this posmon knows versions up to "
            f"{known}; it was written by a newer posmon — upgrade posmon, do not downgrade"
        )


def migrate(
    conn: sqlite3.Connection, steps: Sequence[Sequence[str]] = MIGRATIONS
) -> tuple[int, int]:
    """Bring the database up to ``len(steps)``; returns (version before, version after).

    ``conn`` must be in autocommit mode (``isolation_level=None``). Raises
    :class:`SchemaTooNewError` for a newer database and lets ``sqlite3.Error``
    through (the caller maps it).
    """
    known = len(steps)
    before = schema_version(conn)
    _refuse_if_newer(before, known)
    if before == known:
        return before, before
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_CREATE_TABLE)
        before = schema_version(conn)  # another process may have migrated meanwhile
        _refuse_if_newer(before, known)
        now = format_datetime(datetime.now(UTC))
        for version in range(before + 1, known + 1):
            for statement in steps[version - 1]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (version, now)
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return before, known
