"""The incident record shared by payment and health incidents: its JSON, its scope, and one
pass's opening and closing (which queue the alerts). See :mod:`.incidents`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import structlog

from protocol import format_datetime

from ..alerts.outbox import enqueue
from ..settings import CollectorSettings

log = structlog.get_logger("collector.correlate")

#: The ``incidents`` columns :func:`incident_json` reads, in this order:
#: ``SELECT {INCIDENT_COLUMNS} FROM incidents ...``.
INCIDENT_COLUMNS: Final = (
    "id, kind, cause, scope, store_id, acquirer, terminal_id, device, title, action,"
    " started_at, ended_at, last_seen_at, opened_at, closed_at, terminals, failed_count,"
    " in_doubt_count"
)


def incident_json(row: Sequence[Any]) -> dict[str, Any]:
    """An incident as the API and the alerts show it, from a row of :data:`INCIDENT_COLUMNS`."""
    (
        incident_id,
        kind,
        cause,
        scope,
        store_id,
        acquirer,
        terminal_id,
        device,
        title,
        action,
        started_at,
        ended_at,
        last_seen_at,
        opened_at,
        closed_at,
        terminals,
        failed_count,
        in_doubt_count,
    ) = row
    return {
        "id": int(incident_id),
        "kind": kind,
        "cause": cause,
        "scope": scope,
        "store_id": store_id,
        "acquirer": acquirer,
        "terminal_id": terminal_id,
        "device": device,
        "title": title,
        "action": action,
        "state": "open" if ended_at is None else "closed",
        "started_at": started_at,
        "ended_at": ended_at,
        "last_seen_at": last_seen_at,
        "opened_at": opened_at,
        "closed_at": closed_at,
        "terminals": list(json.loads(terminals)) if terminals else [],
        "failed_count": int(failed_count),
        "in_doubt_count": int(in_doubt_count),
    }


@dataclass(frozen=True, slots=True)
class Scope:
    """What makes two failed payments (or two device troubles) the same incident."""

    key: str
    kind: str  # payments | health
    cause: str
    scope: str  # store | acquirer | device | terminal
    store_id: str | None
    acquirer: str | None
    terminal_id: str | None
    device: str | None
    title: str


# --- opening, closing, counting ----------------------------------------------------------


@dataclass(slots=True)
class IncidentChanges:
    """What a pass did to incidents (for the service's counters and tests)."""

    opened: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)


def stamp(value: datetime) -> str:
    return format_datetime(value)


def fetch(conn: sqlite3.Connection, incident_id: int) -> dict[str, Any]:
    row = conn.execute(
        f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?", (incident_id,)
    ).fetchone()
    return incident_json(row)


def recount(conn: sqlite3.Connection, incident_id: int) -> int:
    """Set an incident's counts, terminals and time span from its payments; returns the count.

    Reads through an index that the incident's scope narrows (store, acquirer or
    terminal, over the incident's time span: its payments all fall in it).
    """
    row = conn.execute(
        "SELECT scope, store_id, acquirer, terminal_id, started_at, last_seen_at, ended_at"
        " FROM incidents WHERE id = ?",
        (incident_id,),
    ).fetchone()
    scope, store_id, acquirer, terminal_id, started_at, last_seen_at, ended_at = row
    # only failed payments join incidents: the partial indexes of failed ones serve
    where, value = {
        "store": ("store_id = ? AND failed = 1", store_id),
        "acquirer": ("acquirer = ? AND failed = 1", acquirer),
        "device": ("terminal_id = ? AND failed = 1", terminal_id),
        "terminal": ("terminal_id = ? AND failed = 1", terminal_id),
    }[scope]
    if scope == "acquirer" and acquirer is None:
        where = "acquirer IS NULL AND failed = 1 AND ?1 IS NULL"
    groups = conn.execute(
        f"SELECT terminal_id, count(*), sum(in_doubt), min(ts), max(ts) FROM txns"
        f" WHERE {where} AND ts >= ? AND ts <= ? AND incident_id = ? GROUP BY terminal_id",
        (value, started_at, last_seen_at, incident_id),
    ).fetchall()
    total = sum(int(g[1]) for g in groups)
    in_doubt = sum(int(g[2] or 0) for g in groups)
    if groups:
        first = min(g[3] for g in groups)
        last = max(g[4] for g in groups)
    else:
        first, last = started_at, last_seen_at
    conn.execute(
        "UPDATE incidents SET failed_count = ?, in_doubt_count = ?, terminals = ?,"
        " started_at = ?, last_seen_at = ? WHERE id = ?",
        (total, in_doubt, json.dumps(sorted(g[0] for g in groups)), first, last, incident_id),
    )
    del ended_at
    return total


class IncidentPass:
    """One pass's view: the collector's settings and clock, and store clocks read once."""

    def __init__(
        self, conn: sqlite3.Connection, settings: CollectorSettings, now: datetime
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.now = now
        self.changes = IncidentChanges()
        self._store_clock: dict[str, str | None] = {}
        #: incidents opened in this pass whose "opened" alert is not queued yet
        self._unannounced: set[int] = set()

    def store_clock(self, store_id: str) -> str | None:
        """The newest event time received from any terminal of the store."""
        if store_id not in self._store_clock:
            row = self.conn.execute(
                "SELECT max(last_event_ts) FROM terminals WHERE store_id = ?", (store_id,)
            ).fetchone()
            self._store_clock[store_id] = row[0]
        return self._store_clock[store_id]

    def open(self, scope: Scope, action: str, started_at: str, last_seen_at: str,
             terminals: Sequence[str]) -> int:  # fmt: skip
        cur = self.conn.execute(
            "INSERT INTO incidents (key, kind, cause, scope, store_id, acquirer, terminal_id,"
            " device, title, action, started_at, last_seen_at, opened_at, terminals)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                scope.key, scope.kind, scope.cause, scope.scope, scope.store_id, scope.acquirer,
                scope.terminal_id, scope.device, scope.title, action, started_at, last_seen_at,
                stamp(self.now), json.dumps(sorted(terminals)),
            ),
        )  # fmt: skip
        incident_id = int(cur.lastrowid or 0)
        self.changes.opened.append(incident_id)
        self._unannounced.add(incident_id)
        log.info(
            "incident_opened",
            incident_id=incident_id,
            kind=scope.kind,
            cause=scope.cause,
            scope=scope.scope,
            title=scope.title,
            started_at=started_at,
        )
        return incident_id

    def announce(self) -> None:
        """Queue the "opened" alerts of the incidents opened in this pass (with their counts)."""
        for incident_id in sorted(self._unannounced):
            enqueue(self.conn, self.settings.alerts, fetch(self.conn, incident_id), "opened",
                    self.now)  # fmt: skip
        self._unannounced.clear()

    def close(self, incident_id: int, ended_at: str, reason: str) -> None:
        if incident_id in self._unannounced:  # opened and closed in one pass: both alerts
            self._unannounced.discard(incident_id)
            enqueue(self.conn, self.settings.alerts, fetch(self.conn, incident_id), "opened",
                    self.now)  # fmt: skip
        self.conn.execute(
            "UPDATE incidents SET ended_at = max(started_at, ?), closed_at = ?"
            " WHERE id = ? AND ended_at IS NULL",
            (ended_at, stamp(self.now), incident_id),
        )
        self.changes.closed.append(incident_id)
        incident = fetch(self.conn, incident_id)
        enqueue(self.conn, self.settings.alerts, incident, "closed", self.now)
        log.info(
            "incident_closed",
            incident_id=incident_id,
            cause=incident["cause"],
            title=incident["title"],
            ended_at=incident["ended_at"],
            reason=reason,
        )


UPS_KINDS: Final = ("megatec_ups", "nut_ups")
#: UPS flags that mean the store's power failed (``low_battery`` as some drivers spell it)
POWER_FLAGS: Final = frozenset({"on_battery", "battery_low", "low_battery", "shutdown_active"})


def trouble(device_kind: str, state: str, flags: Sequence[str]) -> str | None:
    """The cause of a health incident for a device in this state (None: no trouble)."""
    if device_kind in UPS_KINDS and state != "ok" and POWER_FLAGS.intersection(flags):
        return "power"
    if state in ("fault", "disconnected"):
        return "device"
    return None
