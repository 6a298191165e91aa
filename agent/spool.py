"""The agent's outbox: a SQLite database (WAL) on the terminal's disk.

Every event the agent records is written here first, in a transaction that
also advances the per-agent ``seq`` counter, so seqs are strictly increasing
and survive restarts. An event leaves the spool only when

- the collector acknowledged it (:meth:`Spool.ack`),
- the collector rejected it as malformed: it moves to the quarantine table,
  kept and counted (:meth:`Spool.quarantine`), or
- the bound forces it out (:meth:`Spool.enforce_bounds`): events older than
  ``max_age_s``, then, while the stored size is over ``max_bytes``, the
  oldest health samples first, then quarantined batches, then state changes,
  and payment events last. Every drop is counted by kind and returned so the
  agent can report it as an ``agent_event``.

The same database keeps the payment book (:mod:`agent.payments`): payments
started and not yet ended, in doubt, or recently ended (for idempotency), in
the ``payments`` table. :meth:`Spool.append_with` writes events, payment rows,
counters and ``meta`` keys (such as a log file's offset) in ONE transaction:
after a crash either all of it is there or none of it.

The schema is versioned by ``PRAGMA user_version``; :data:`_MIGRATIONS` takes
an older file forward step by step, each step in its own transaction.

The class is synchronous (sqlite3); the agent runs all calls on one worker
thread. Errors of sqlite3 are mapped to :class:`SpoolError` here.

Errors::

    SpoolError          the database cannot be opened, read or written
      SpoolFull         the disk or the file is full even after shedding
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from protocol import Event, encode_event

SCHEMA_VERSION = 2

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    created_at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_priority ON events (priority, seq);
CREATE INDEX IF NOT EXISTS events_created ON events (created_at);
CREATE TABLE IF NOT EXISTS quarantine (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    body BLOB NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    quarantined_at REAL NOT NULL
);
"""

_PAYMENTS_V2 = """
CREATE TABLE IF NOT EXISTS payments (
    txn_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    received_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_state ON payments (state, updated_at);
"""

#: ``_MIGRATIONS[i]`` takes a spool from schema version i to i + 1.
_MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1, _PAYMENTS_V2)
assert len(_MIGRATIONS) == SCHEMA_VERSION

#: Rows a single drop statement removes before the size is checked again.
_DROP_CHUNK = 256
#: After shedding for size, stop at this fraction of max_bytes so that the
#: next few events do not trigger another round at once.
_LOW_WATER = 0.9


class SpoolError(Exception):
    """The spool database cannot be opened, read or written."""


class SpoolFull(SpoolError):
    """No room for new events even after shedding what the bound allows."""


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    """Events taken from the head of the spool, in seq order.

    ``remaining`` is how many events the spool held besides these when the
    batch was taken: the report's ``backlog``.
    """

    seqs: tuple[int, ...]
    bodies: tuple[bytes, ...]
    remaining: int = 0

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.bodies)

    def __len__(self) -> int:
        return len(self.seqs)


@dataclasses.dataclass(frozen=True, slots=True)
class Drops:
    """What one round of bound enforcement removed, by event kind."""

    reason: Literal["age", "size"]
    by_kind: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


@dataclasses.dataclass(frozen=True, slots=True)
class PaymentRow:
    """One payment of the payment book as stored; ``body`` is the book's own JSON."""

    txn_id: str
    state: str
    received_at: float
    updated_at: float
    body: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class SpoolStats:
    depth: int
    bytes: int
    quarantined: int
    by_kind: dict[str, int]
    oldest_created_at: float | None
    next_seq: int
    dropped: dict[str, int]


class Spool:
    """A durable, bounded outbox. Not thread-safe: use from one thread."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_age_s: float,
        sync: Literal["full", "normal"] = "full",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.sync = sync
        self._now = clock
        self._db: sqlite3.Connection | None = None
        self._bytes = 0
        self._queued = 0
        self._next_seq = 1
        self.agent_id = ""

    # -- life cycle -------------------------------------------------------

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self.sync == 'full' else 'NORMAL'}")
            db.execute("PRAGMA busy_timeout=5000")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                db.close()
                raise SpoolError(
                    f"{self.path}: spool schema version {version} is newer than this agent "
                    f"understands ({SCHEMA_VERSION}); upgrade posmon-agent"
                )
            for step in range(version, SCHEMA_VERSION):
                _migrate(db, step)
            self._db = db
            with self._tx():
                agent_id = self._meta("agent_id")
                if agent_id is None:
                    # A new spool is a new agent identity: seqs restart at 1, and
                    # the collector deduplicates by (agent id, seq), so a
                    # reinstalled terminal never collides with its old self.
                    agent_id = uuid.uuid4().hex
                    self._set_meta("agent_id", agent_id)
                    self._set_meta("next_seq", "1")
                self.agent_id = agent_id
                self._next_seq = int(self._meta("next_seq") or "1")
            self._bytes = int(self._q("SELECT total(length(body)) FROM events")[0][0])
            self._bytes += int(self._q("SELECT total(length(body)) FROM quarantine")[0][0])
            self._queued = self.depth()
        except (sqlite3.Error, OSError) as err:
            raise SpoolError(f"{self.path}: cannot open spool: {err}") from err

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error as err:
                raise SpoolError(f"{self.path}: close failed: {err}") from err
            finally:
                self._db = None

    # -- writing ----------------------------------------------------------

    def append(self, events: Sequence[Event]) -> tuple[int, ...]:
        """Store events, assigning each the next seq; durable on return."""
        if not events:
            return ()
        try:
            return self._append(events)
        except sqlite3.Error as err:
            if not _is_full(err):
                raise SpoolError(f"{self.path}: append failed: {err}") from err
        # The disk is full: shed health samples and try once more.
        self._shed_for_space()
        try:
            return self._append(events)
        except sqlite3.Error as err:
            raise SpoolFull(f"{self.path}: no room for {len(events)} events: {err}") from err

    def append_with(
        self,
        events: Sequence[Event],
        *,
        meta: Mapping[str, str] | None = None,
        bump: Mapping[str, int] | None = None,
        payments: Sequence[PaymentRow] = (),
        forget: Sequence[str] = (),
    ) -> tuple[int, ...]:
        """:meth:`append`, and in the same transaction: set ``meta`` keys (a log
        file's offset), add to ``bump`` counters (kept in ``meta``), write
        ``payments`` rows and delete the payments named in ``forget``.

        Committed even when ``events`` is empty; durable on return. On an error
        nothing of it is stored.
        """

        def extra() -> None:
            for key, value in (meta or {}).items():
                self._set_meta(key, value)
            for key, by in (bump or {}).items():
                self._bump(key, by)
            if payments:
                self._conn.executemany(
                    "INSERT INTO payments (txn_id, state, received_at, updated_at, body) "
                    "VALUES (?,?,?,?,?) ON CONFLICT (txn_id) DO UPDATE SET "
                    "state = excluded.state, received_at = excluded.received_at, "
                    "updated_at = excluded.updated_at, body = excluded.body",
                    [(p.txn_id, p.state, p.received_at, p.updated_at, p.body) for p in payments],
                )
            if forget:
                self._conn.executemany(
                    "DELETE FROM payments WHERE txn_id = ?", [(t,) for t in forget]
                )

        try:
            return self._append(events, extra)
        except sqlite3.Error as err:
            if not _is_full(err):
                raise SpoolError(f"{self.path}: append failed: {err}") from err
        self._shed_for_space()
        try:
            return self._append(events, extra)
        except sqlite3.Error as err:
            raise SpoolFull(f"{self.path}: no room for {len(events)} events: {err}") from err

    def _append(
        self, events: Sequence[Event], extra: Callable[[], None] | None = None
    ) -> tuple[int, ...]:
        now = self._now()
        with self._tx():
            if extra is not None:
                extra()
            seq = int(self._meta("next_seq") or "1")
            rows = []
            added = 0
            for event in events:
                body = encode_event(dataclasses.replace(event, seq=seq))
                rows.append((seq, event.kind, event.priority, now, body))
                added += len(body)
                seq += 1
            self._conn.executemany(
                "INSERT INTO events (seq, kind, priority, created_at, body) VALUES (?,?,?,?,?)",
                rows,
            )
            self._set_meta("next_seq", str(seq))
        self._next_seq = seq
        self._bytes += added
        self._queued += len(rows)
        return tuple(r[0] for r in rows)

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete events the collector acknowledged; returns how many went."""
        removed = 0
        try:
            with self._tx():
                for chunk in _chunks(list(seqs), 500):
                    marks = ",".join("?" * len(chunk))
                    for (size,) in self._conn.execute(
                        f"DELETE FROM events WHERE seq IN ({marks}) RETURNING length(body)", chunk
                    ):
                        self._bytes -= size
                        removed += 1
        except sqlite3.Error as err:
            raise SpoolError(f"{self.path}: ack failed: {err}") from err
        self._queued -= removed
        return removed

    def quarantine(self, seqs: Iterable[int], *, status: int, reason: str) -> int:
        """Move events the collector refused as malformed out of the queue."""
        seq_list = list(seqs)
        moved = left = 0
        try:
            with self._tx():
                for chunk in _chunks(seq_list, 500):
                    marks = ",".join("?" * len(chunk))
                    moved += self._conn.execute(
                        "INSERT OR IGNORE INTO quarantine "
                        "(seq, kind, body, status, reason, quarantined_at) "
                        f"SELECT seq, kind, body, ?, ?, ? FROM events WHERE seq IN ({marks})",
                        (status, reason[:1000], self._now(), *chunk),
                    ).rowcount
                    left += self._conn.execute(
                        f"DELETE FROM events WHERE seq IN ({marks})", chunk
                    ).rowcount
                self._bump("quarantined_total", moved)
        except sqlite3.Error as err:
            raise SpoolError(f"{self.path}: quarantine failed: {err}") from err
        self._queued -= left
        return moved

    # -- reading ----------------------------------------------------------

    def peek(self, max_events: int, max_bytes: int) -> Batch:
        """The oldest events, at most ``max_events`` and ``max_bytes`` (but at least one)."""
        seqs: list[int] = []
        bodies: list[bytes] = []
        size = 0
        try:
            for seq, body in self._conn.execute(
                "SELECT seq, body FROM events ORDER BY seq LIMIT ?", (max_events,)
            ):
                if bodies and size + len(body) > max_bytes:
                    break
                seqs.append(seq)
                bodies.append(bytes(body))
                size += len(body)
        except sqlite3.Error as err:
            raise SpoolError(f"{self.path}: read failed: {err}") from err
        return Batch(tuple(seqs), tuple(bodies), remaining=max(0, self._queued - len(seqs)))

    def depth(self) -> int:
        """Events queued, counted in the database (a scan: see :attr:`queued`)."""
        return int(self._q("SELECT count(*) FROM events")[0][0])

    @property
    def queued(self) -> int:
        """Events queued, kept in memory as events come and go (no scan)."""
        return self._queued

    @property
    def stored_bytes(self) -> int:
        """Bytes of event bodies held (queue and quarantine): what the bound limits."""
        return self._bytes

    def stats(self) -> SpoolStats:
        by_kind = {k: n for k, n in self._q("SELECT kind, count(*) FROM events GROUP BY kind")}
        dropped = {
            key.removeprefix("dropped_"): int(value)
            for key, value in self._q("SELECT key, value FROM meta WHERE key LIKE 'dropped_%'")
        }
        return SpoolStats(
            depth=sum(by_kind.values()),
            bytes=self._bytes,
            quarantined=int(self._q("SELECT count(*) FROM quarantine")[0][0]),
            by_kind=by_kind,
            oldest_created_at=self._q("SELECT min(created_at) FROM events")[0][0],
            next_seq=self._next_seq,
            dropped=dropped,
        )

    def get_meta(self, key: str) -> str | None:
        return self._meta(key)

    def meta_items(self, prefix: str) -> dict[str, str]:
        """Every ``meta`` key that starts with ``prefix``, and its value."""
        return {
            str(key): str(value)
            for key, value in self._q(
                "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
            )
        }

    # -- the payment book ---------------------------------------------------

    def payment_rows(self) -> list[PaymentRow]:
        """Every payment the book keeps, oldest first."""
        return [
            PaymentRow(str(t), str(st), float(r), float(u), bytes(b))
            for t, st, r, u, b in self._q(
                "SELECT txn_id, state, received_at, updated_at, body FROM payments "
                "ORDER BY received_at, txn_id"
            )
        ]

    def prune_payments(self, *, state: str, updated_before: float) -> int:
        """Forget payments in ``state`` last changed before ``updated_before``."""
        try:
            with self._tx():
                return self._conn.execute(
                    "DELETE FROM payments WHERE state = ? AND updated_at < ?",
                    (state, updated_before),
                ).rowcount
        except sqlite3.Error as err:
            raise SpoolError(f"{self.path}: pruning payments failed: {err}") from err

    def set_meta(self, key: str, value: str) -> None:
        with self._tx():
            self._set_meta(key, value)

    # -- the bound --------------------------------------------------------

    def enforce_bounds(self) -> list[Drops]:
        """Apply the age and size bounds; returns what was dropped, by reason."""
        out = []
        try:
            aged = self._drop_by_age()
            if aged:
                out.append(Drops("age", aged))
            if self._bytes > self.max_bytes:
                sized = self._drop_for_size(int(self.max_bytes * _LOW_WATER))
                if sized:
                    out.append(Drops("size", sized))
        except sqlite3.Error as err:
            raise SpoolError(f"{self.path}: enforcing the bound failed: {err}") from err
        return out

    def report_drops(self, make_event: Callable[[dict[str, int]], Event]) -> dict[str, int]:
        """Append one event reporting the drops no earlier report covered; returns them.

        Drops are counted in ``meta`` (``dropped_<kind>``) by the transaction that
        drops; a report marks what it covers (``reported_<kind>``) in the same
        transaction as its event. So a report lost to a stop in between is made
        up on the next call (the agent calls this after dropping and at start).
        Raises SpoolError (SpoolFull when there is no room for the report).
        """
        try:
            counted = {
                key.removeprefix("dropped_"): int(value)
                for key, value in self._q("SELECT key, value FROM meta WHERE key LIKE 'dropped_%'")
            }
            reported = {
                key.removeprefix("reported_"): int(value)
                for key, value in self._q("SELECT key, value FROM meta WHERE key LIKE 'reported_%'")
            }
        except sqlite3.Error as err:
            raise SpoolError(f"{self.path}: reading the drop counts failed: {err}") from err
        unreported = {
            kind: n - reported.get(kind, 0)
            for kind, n in sorted(counted.items())
            if n > reported.get(kind, 0)
        }
        if unreported:
            self.append_with(
                [make_event(unreported)],
                meta={f"reported_{kind}": str(counted[kind]) for kind in unreported},
            )
        return unreported

    def _drop_by_age(self) -> dict[str, int]:
        cutoff = self._now() - self.max_age_s
        dropped: Counter[str] = Counter()
        with self._tx():
            for kind, size in self._conn.execute(
                "DELETE FROM events WHERE created_at < ? RETURNING kind, length(body)", (cutoff,)
            ):
                dropped[kind] += 1
                self._bytes -= size
                self._queued -= 1
            for kind, size in self._conn.execute(
                "DELETE FROM quarantine WHERE quarantined_at < ? RETURNING kind, length(body)",
                (cutoff,),
            ):
                dropped["quarantined_" + kind] += 1
                self._bytes -= size
            self._count_drops(dropped)
        return dict(dropped)

    def _drop_for_size(self, target: int) -> dict[str, int]:
        """Shed the oldest events, least valuable class first, until under ``target``."""
        dropped: Counter[str] = Counter()
        # Health samples, then quarantined batches, then state changes, payments last.
        for table, priority in (("events", 0), ("quarantine", None), ("events", 1), ("events", 2)):
            while self._bytes > target:
                where = "" if priority is None else f"WHERE priority = {priority}"
                rows = self._conn.execute(
                    f"SELECT seq, length(body) FROM {table} {where} ORDER BY seq LIMIT ?",
                    (_DROP_CHUNK,),
                ).fetchall()
                if not rows:
                    break
                # Take only as many of the oldest as the bound asks for.
                need, victims = self._bytes - target, []
                for seq, size in rows:
                    victims.append(seq)
                    need -= size
                    if need <= 0:
                        break
                chunk: Counter[str] = Counter()
                prefix = "quarantined_" if table == "quarantine" else ""
                with self._tx():
                    marks = ",".join("?" * len(victims))
                    for kind, size in self._conn.execute(
                        f"DELETE FROM {table} WHERE seq IN ({marks}) RETURNING kind, length(body)",
                        victims,
                    ):
                        chunk[prefix + kind] += 1
                        self._bytes -= size
                        if table == "events":
                            self._queued -= 1
                    self._count_drops(chunk)
                dropped.update(chunk)
        return dict(dropped)

    def _shed_for_space(self) -> None:
        """The disk is full: drop health samples (only) to make room."""
        try:
            dropped: Counter[str] = Counter()
            with self._tx():
                for kind, size in self._conn.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE priority = 0 "
                    "ORDER BY seq LIMIT ?) RETURNING kind, length(body)",
                    (_DROP_CHUNK * 4,),
                ):
                    dropped[kind] += 1
                    self._bytes -= size
                    self._queued -= 1
                self._count_drops(dropped)
        except sqlite3.Error as err:
            raise SpoolFull(f"{self.path}: disk full and nothing to shed: {err}") from err

    # -- helpers ----------------------------------------------------------

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise SpoolError(f"{self.path}: spool is not open")
        return self._db

    def _tx(self) -> _Transaction:
        return _Transaction(self._conn)

    def _q(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise SpoolError(f"{self.path}: query failed: {err}") from err

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _bump(self, key: str, by: int) -> None:
        if by:
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + ?",
                (key, str(by), by),
            )

    def _count_drops(self, dropped: Counter[str]) -> None:
        for kind, n in dropped.items():
            self._bump(f"dropped_{kind}", n)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")


def _migrate(db: sqlite3.Connection, step: int) -> None:
    """Take the schema from version ``step`` to ``step + 1`` in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in _MIGRATIONS[step].split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version={step + 1}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _is_full(err: sqlite3.Error) -> bool:
    return "full" in str(err).lower()


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection for ``posmon-agent status`` while the agent runs."""
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as err:
        raise SpoolError(f"{path}: cannot open spool read-only: {err}") from err
