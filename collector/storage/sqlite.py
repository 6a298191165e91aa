"""SQLite implementation of :class:`~collector.storage.base.Storage`.

Durability first: WAL with ``synchronous=FULL``, and a report is acknowledged
only after the transaction holding its events committed. All SQL runs in the
one thread of :class:`~.sqlite_writer.SqliteWriter`, which commits the reports
that arrive together in one transaction (group commit). Event rows are built
on the caller's side, so the writer thread only executes SQL. The terminal's
row is kept in the same transaction: last seen, agent version, and the spool
backlog its agent reported (``terminals.spool_backlog``).

Tokens are kept as the sha256 of the token. Lookups are cached in memory (the
table is tiny); a miss goes to the database, so a token created meanwhile by
``posmon-collector token create`` in another process is found.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import structlog

from protocol import Ack, format_datetime
from protocol.fastwire import WireReport

from .base import TokenInfo, TokenKind, hash_token, new_token, refusal
from .sqlite_schema import migrate
from .sqlite_writer import DEFAULT_MAX_GROUP, SqliteWriter

log = structlog.get_logger("collector.storage")

_INSERT_EVENT = """
INSERT INTO events (agent_id, seq, terminal_id, store_id, kind, ts, received_at, body)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (agent_id, seq) DO NOTHING
"""
_INSERT_TERMINAL = """
INSERT INTO terminals
    (terminal_id, store_id, agent_id, agent_version, first_seen, last_seen, spool_backlog)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (terminal_id) DO NOTHING
"""
# spool_backlog: the report's backlog; a report without one (an older agent) leaves it as it was
_UPDATE_TERMINAL = """
UPDATE terminals
SET store_id = ?, agent_id = ?, agent_version = ?, last_seen = max(last_seen, ?),
    spool_backlog = coalesce(?, spool_backlog)
WHERE terminal_id = ?
"""
_TOKEN_COLUMNS = "kind, terminal_id, store_id, name"

EventRow = tuple[str, int, str, str, str, str, str, str]


@dataclass(frozen=True, slots=True)
class _Written:
    """What one report's transaction did, for the caller to log after commit."""

    stored: int
    new_terminal: bool
    previous: tuple[str, str, str] | None  # (store_id, agent_id, agent_version) before


def _token_info(row: tuple[str, str | None, str | None, str | None]) -> TokenInfo:
    kind, terminal_id, store_id, name = row
    return TokenInfo(cast(TokenKind, kind), terminal_id, store_id, name)


class SqliteStorage:
    """Events, terminals and tokens in one SQLite file."""

    def __init__(self, path: str, *, max_group: int = DEFAULT_MAX_GROUP) -> None:
        self.path = path
        self._writer = SqliteWriter(path, max_group=max_group)
        self._tokens: dict[str, TokenInfo] = {}

    @property
    def writer(self) -> SqliteWriter:
        """The writer thread (its ``commits``/``grouped_jobs`` counters show group commit)."""
        return self._writer

    async def open(self) -> None:
        before, after = await self._writer.start(migrate)
        if before != after:
            log.info("database_migrated", db=self.path, from_version=before, to_version=after)
        rows = await self._writer.read(
            lambda conn: conn.execute(f"SELECT token_hash, {_TOKEN_COLUMNS} FROM tokens").fetchall()
        )
        self._tokens = {row[0]: _token_info(row[1:]) for row in rows}

    async def close(self) -> None:
        await self._writer.stop()

    async def ingest(self, token: TokenInfo, report: WireReport) -> Ack:
        reason = refusal(token, report.agent)
        if reason is not None:
            raise ValueError(reason)
        agent = report.agent
        received = format_datetime(datetime.now(UTC))
        # body is the event's JSON as validated; ts its time in UTC (format_datetime)
        rows: list[EventRow] = [
            (
                agent.id,
                ev.seq,
                agent.terminal_id,
                agent.store_id,
                ev.kind,
                ev.ts,
                received,
                ev.body.decode(),
            )
            for ev in report.events
        ]
        terminal = (agent.terminal_id, agent.store_id, agent.id, agent.version, received)
        backlog = report.backlog

        def write(conn: sqlite3.Connection) -> _Written:
            stored = conn.executemany(_INSERT_EVENT, rows).rowcount if rows else 0
            terminal_id, store_id, agent_id, version, seen = terminal
            previous = conn.execute(
                "SELECT store_id, agent_id, agent_version FROM terminals WHERE terminal_id = ?",
                (terminal_id,),
            ).fetchone()
            if previous is None:
                conn.execute(
                    _INSERT_TERMINAL,
                    (terminal_id, store_id, agent_id, version, seen, seen, backlog),
                )
            else:
                conn.execute(
                    _UPDATE_TERMINAL, (store_id, agent_id, version, seen, backlog, terminal_id)
                )
            return _Written(max(stored, 0), previous is None, previous)

        written = await self._writer.write(write)
        self._log_changes(report, written)
        seqs = tuple(ev.seq for ev in report.events)
        return Ack(acked=seqs, stored=written.stored, duplicates=len(rows) - written.stored)

    @staticmethod
    def _log_changes(report: WireReport, written: _Written) -> None:
        agent = report.agent
        if written.new_terminal:
            log.info(
                "terminal_registered",
                terminal_id=agent.terminal_id,
                store_id=agent.store_id,
                agent_id=agent.id,
                agent_version=agent.version,
            )
        elif written.previous is not None and written.previous != (
            agent.store_id,
            agent.id,
            agent.version,
        ):
            store_id, agent_id, version = written.previous
            log.info(
                "terminal_agent_changed",
                terminal_id=agent.terminal_id,
                store_id=agent.store_id,
                agent_id=agent.id,
                agent_version=agent.version,
                previous_store_id=store_id,
                previous_agent_id=agent_id,
                previous_agent_version=version,
            )

    async def create_token(
        self,
        kind: TokenKind,
        *,
        terminal_id: str | None = None,
        store_id: str | None = None,
        name: str | None = None,
    ) -> str:
        info = TokenInfo(kind, terminal_id, store_id, name)  # validates: ValueError
        token = new_token()
        key = hash_token(token)
        created = format_datetime(datetime.now(UTC))

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO tokens (token_hash, {_TOKEN_COLUMNS}, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key, info.kind, info.terminal_id, info.store_id, info.name, created),
            )

        await self._writer.write(write)
        self._tokens[key] = info
        log.info("token_created", **_describe(info))
        return token

    async def lookup_token(self, token: str) -> TokenInfo | None:
        key = hash_token(token)
        info = self._tokens.get(key)
        if info is not None:
            return info
        row = await self._writer.read(
            lambda conn: conn.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE token_hash = ?", (key,)
            ).fetchone()
        )
        if row is None:
            return None
        info = _token_info(row)
        self._tokens[key] = info
        return info

    async def ping(self) -> None:
        await self._writer.read(
            lambda conn: conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        )

    async def event_count(self) -> int:
        row = await self._writer.read(
            lambda conn: conn.execute("SELECT count(*) FROM events").fetchone()
        )
        return int(row[0])


def _describe(info: TokenInfo) -> dict[str, str | None]:
    if info.kind == "agent":
        return {"kind": info.kind, "terminal_id": info.terminal_id, "store_id": info.store_id}
    return {"kind": info.kind, "name": info.name}
