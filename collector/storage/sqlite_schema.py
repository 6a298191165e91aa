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
    # 3: what the correlator derives from the events (see collector/correlate):
    #    current state per terminal, payments with their cause, incidents, alerts
    (
        # how far the correlator has read the events table (events.rowid)
        """
        CREATE TABLE correlator_cursor (
            name       TEXT PRIMARY KEY,
            last_rowid INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
        # the terminal's current host sample, clock and spool, next to last_seen
        "ALTER TABLE terminals ADD COLUMN host TEXT",  # JSON of the last host_sample
        "ALTER TABLE terminals ADD COLUMN host_ts TEXT",
        "ALTER TABLE terminals ADD COLUMN clock_offset_ms REAL",
        "ALTER TABLE terminals ADD COLUMN clock_ts TEXT",
        "ALTER TABLE terminals ADD COLUMN spool_backlog INTEGER",  # events still queued
        "ALTER TABLE terminals ADD COLUMN last_event_ts TEXT",  # newest event ts
        # each probe's current state (from probe_change and probe_window)
        """
        CREATE TABLE probe_state (
            terminal_id TEXT NOT NULL,
            probe_key   TEXT NOT NULL,               -- probe + ' ' + target + ' ' + role
            probe       TEXT NOT NULL,
            target      TEXT NOT NULL,
            role        TEXT NOT NULL,
            acquirer    TEXT,
            state       TEXT NOT NULL CHECK (state IN ('ok', 'fail')),
            error       TEXT,
            since       TEXT NOT NULL,               -- ts of the change into this state
            last_ts     TEXT NOT NULL,               -- ts of the newest event about it
            last_window TEXT,                        -- JSON: the last probe_window's figures
            PRIMARY KEY (terminal_id, probe_key)
        ) WITHOUT ROWID
        """,
        # each device's current state (from device_status)
        """
        CREATE TABLE device_state (
            terminal_id TEXT NOT NULL,
            device      TEXT NOT NULL,
            device_kind TEXT NOT NULL,
            state       TEXT NOT NULL,
            flags       TEXT NOT NULL,               -- JSON list
            attributes  TEXT NOT NULL,               -- JSON object
            reason      TEXT,
            since       TEXT NOT NULL,
            last_ts     TEXT NOT NULL,
            PRIMARY KEY (terminal_id, device)
        ) WITHOUT ROWID
        """,
        # every payment the collector heard of, one row per (terminal, txn_id);
        # cause, confidence, evidence and action are set for failed ones
        """
        CREATE TABLE txns (
            terminal_id   TEXT NOT NULL,
            txn_id        TEXT NOT NULL,
            store_id      TEXT NOT NULL,
            agent_id      TEXT NOT NULL,
            seq           INTEGER NOT NULL,          -- the newest txn event for it
            ts            TEXT NOT NULL,             -- when it ended or timed out
            started_at    TEXT,
            txn_kind      TEXT NOT NULL,
            acquirer      TEXT,
            outcome       TEXT NOT NULL,
            response_code TEXT,
            technical     INTEGER NOT NULL,
            in_doubt      INTEGER NOT NULL,
            late          INTEGER NOT NULL,
            resolution    TEXT,
            amount_minor  INTEGER,
            currency      TEXT,
            latency_ms    REAL,
            failed        INTEGER NOT NULL,          -- 1: needs a cause
            local_cause   TEXT,                      -- the cause from this store's evidence only
            cause         TEXT,
            confidence    REAL,
            evidence      TEXT,          -- JSON [{event_id, kind, ts, terminal_id, what}]
            action        TEXT,
            attributed_at TEXT,
            incident_id   INTEGER,
            PRIMARY KEY (terminal_id, txn_id)
        ) WITHOUT ROWID
        """,
        # the failed payments the correlator still has to decide, worked off a bounded
        # batch per pass: level 2 its first cause (new or changed), 1 a revision (new
        # evidence, the fleet around it changed); deleted once decided
        """
        CREATE TABLE txn_pending (
            terminal_id TEXT NOT NULL,
            txn_id      TEXT NOT NULL,
            level       INTEGER NOT NULL CHECK (level IN (1, 2)),
            ts          TEXT NOT NULL,               -- txns.ts: oldest first
            PRIMARY KEY (terminal_id, txn_id)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX txn_pending_level_ts ON txn_pending (level, ts)",
        # the fleet rule's failures: the local causes that leave the acquirer as the suspect
        # (collector.correlate.evidence.FLEET_CAUSES), per store, in time
        "CREATE INDEX txns_fleet ON txns (acquirer, store_id, ts) WHERE failed = 1"
        " AND local_cause IN ('acquirer_path', 'acquirer_outage', 'unknown')",
        # which stores had such failures to an acquirer in which minute (kept by the
        # triggers below): the fleet rule reads the stores near a payment from here, then
        # each one's nearest failure from txns (a stale row costs a read, never a verdict)
        """
        CREATE TABLE fleet_minutes (
            acquirer TEXT NOT NULL,
            minute   TEXT NOT NULL,                  -- substr(ts, 1, 16): 'YYYY-MM-DDTHH:MM'
            store_id TEXT NOT NULL,
            failures INTEGER NOT NULL,
            PRIMARY KEY (acquirer, minute, store_id)
        ) WITHOUT ROWID
        """,
        """
        CREATE TRIGGER txns_fleet_insert AFTER INSERT ON txns
        WHEN new.failed = 1 AND new.acquirer IS NOT NULL
             AND new.local_cause IN ('acquirer_path', 'acquirer_outage', 'unknown')
        BEGIN
            INSERT INTO fleet_minutes (acquirer, minute, store_id, failures)
            VALUES (new.acquirer, substr(new.ts, 1, 16), new.store_id, 1)
            ON CONFLICT (acquirer, minute, store_id) DO UPDATE SET failures = failures + 1;
        END
        """,
        """
        CREATE TRIGGER txns_fleet_leave
        AFTER UPDATE OF failed, acquirer, ts, store_id, local_cause ON txns
        WHEN old.failed = 1 AND old.acquirer IS NOT NULL
             AND old.local_cause IN ('acquirer_path', 'acquirer_outage', 'unknown')
             AND (old.failed, old.acquirer, old.ts, old.store_id, old.local_cause)
                 IS NOT (new.failed, new.acquirer, new.ts, new.store_id, new.local_cause)
        BEGIN
            UPDATE fleet_minutes SET failures = failures - 1
            WHERE acquirer = old.acquirer AND minute = substr(old.ts, 1, 16)
              AND store_id = old.store_id;
            DELETE FROM fleet_minutes
            WHERE acquirer = old.acquirer AND minute = substr(old.ts, 1, 16)
              AND store_id = old.store_id AND failures <= 0;
        END
        """,
        """
        CREATE TRIGGER txns_fleet_join
        AFTER UPDATE OF failed, acquirer, ts, store_id, local_cause ON txns
        WHEN new.failed = 1 AND new.acquirer IS NOT NULL
             AND new.local_cause IN ('acquirer_path', 'acquirer_outage', 'unknown')
             AND (old.failed, old.acquirer, old.ts, old.store_id, old.local_cause)
                 IS NOT (new.failed, new.acquirer, new.ts, new.store_id, new.local_cause)
        BEGIN
            INSERT INTO fleet_minutes (acquirer, minute, store_id, failures)
            VALUES (new.acquirer, substr(new.ts, 1, 16), new.store_id, 1)
            ON CONFLICT (acquirer, minute, store_id) DO UPDATE SET failures = failures + 1;
        END
        """,
        """
        CREATE TRIGGER txns_fleet_delete AFTER DELETE ON txns
        WHEN old.failed = 1 AND old.acquirer IS NOT NULL
             AND old.local_cause IN ('acquirer_path', 'acquirer_outage', 'unknown')
        BEGIN
            UPDATE fleet_minutes SET failures = failures - 1
            WHERE acquirer = old.acquirer AND minute = substr(old.ts, 1, 16)
              AND store_id = old.store_id;
            DELETE FROM fleet_minutes
            WHERE acquirer = old.acquirer AND minute = substr(old.ts, 1, 16)
              AND store_id = old.store_id AND failures <= 0;
        END
        """,
        "CREATE INDEX txns_ts ON txns (ts)",
        "CREATE INDEX txns_terminal_ts ON txns (terminal_id, ts)",
        "CREATE INDEX txns_store_ts ON txns (store_id, ts)",
        "CREATE INDEX txns_failed_acquirer_ts ON txns (acquirer, ts) WHERE failed = 1",
        "CREATE INDEX txns_cause_ts ON txns (cause, ts) WHERE failed = 1",
        "CREATE INDEX txns_in_doubt_ts ON txns (ts) WHERE in_doubt = 1",
        # the fleet view and the per-terminal counts read only these partial indexes
        # (covering: the columns the queries read are in the index)
        "CREATE INDEX txns_failed_ts ON txns (ts, cause, terminal_id) WHERE failed = 1",
        "CREATE INDEX txns_failed_terminal_ts ON txns (terminal_id, ts, cause, failed)"
        " WHERE failed = 1",
        "CREATE INDEX txns_unresolved ON txns (terminal_id, in_doubt, resolution)"
        " WHERE in_doubt = 1 AND resolution IS NULL",
        # payments of a store waiting for the fleet window before their incident opens
        "CREATE INDEX txns_waiting ON txns (store_id, ts) WHERE failed = 1"
        " AND incident_id IS NULL AND cause IN ('acquirer_path', 'acquirer_outage')",
        # incidents: payment incidents (a cause in a scope) and health incidents
        """
        CREATE TABLE incidents (
            id            INTEGER PRIMARY KEY,
            key           TEXT NOT NULL,             -- what makes it the same incident
            kind          TEXT NOT NULL CHECK (kind IN ('payments', 'health')),
            cause         TEXT NOT NULL,
            scope         TEXT NOT NULL CHECK (scope IN ('store', 'acquirer', 'device',
                                                        'terminal')),
            store_id      TEXT,
            acquirer      TEXT,
            terminal_id   TEXT,
            device        TEXT,
            title         TEXT NOT NULL,
            action        TEXT NOT NULL,
            started_at    TEXT NOT NULL,             -- event time of the first sign
            ended_at      TEXT,                      -- event time it ended; NULL: open
            last_seen_at  TEXT NOT NULL,             -- event time of the newest sign
            opened_at     TEXT NOT NULL,             -- collector clock
            closed_at     TEXT,
            terminals     TEXT NOT NULL,             -- JSON list of terminal ids
            failed_count  INTEGER NOT NULL DEFAULT 0,
            in_doubt_count INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE UNIQUE INDEX incidents_open_key ON incidents (key) WHERE ended_at IS NULL",
        "CREATE INDEX incidents_started ON incidents (started_at)",
        # alerts to deliver, kept until delivered or given up (survive a restart)
        """
        CREATE TABLE alert_outbox (
            id              INTEGER PRIMARY KEY,
            incident_id     INTEGER NOT NULL,
            transition      TEXT NOT NULL CHECK (transition IN ('opened', 'closed')),
            channel         TEXT NOT NULL CHECK (channel IN ('webhook', 'email')),
            payload         TEXT NOT NULL,           -- JSON: the incident as the API shows it
            created_at      TEXT NOT NULL,
            attempts        INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            delivered_at    TEXT,
            gave_up_at      TEXT,
            last_error      TEXT
        )
        """,
        "CREATE INDEX alert_outbox_due ON alert_outbox (next_attempt_at)"
        " WHERE delivered_at IS NULL AND gave_up_at IS NULL",
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
