"""The read API's SQL (SQLite). Every function takes a read-only connection.

Every value is a bound parameter; only fixed fragments written here are
joined into statements. Lists are keyset-paginated: each page query asks for
``limit + 1`` rows after the cursor's key, so the caller knows whether a next
page exists.

Times are the stored ISO strings (``format_datetime``: UTC, fixed width, Z),
which sort as text in time order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from protocol import format_datetime

from ..correlate.incidents import INCIDENT_COLUMNS
from ..settings import AttributionSettings
from .params import Key

#: probe roles whose failure makes a terminal "fault" (the collector probe does not)
FAULT_ROLES = ("link", "gateway", "isp", "dns", "acquirer")
RECENT_FAILURES = 20


@dataclass(frozen=True, slots=True)
class StateRule:
    """What makes a terminal offline, fault or warning (from AttributionSettings)."""

    offline_before: str  # last_seen older than this: offline
    cpu_pct: float
    mem_pct: float
    disk_pct: float

    @classmethod
    def of(cls, settings: AttributionSettings, now: datetime) -> StateRule:
        """The rule of ``[attribution]`` at ``now``."""
        return cls(
            offline_before=format_datetime(now - timedelta(seconds=settings.offline_after_s)),
            cpu_pct=settings.cpu_starved_pct,
            mem_pct=settings.mem_starved_pct,
            disk_pct=settings.disk_full_pct,
        )

    def params(self) -> dict[str, Any]:
        return {
            "offline_before": self.offline_before,
            "cpu": self.cpu_pct,
            "mem": self.mem_pct,
            "disk": self.disk_pct,
        }


# the state of terminal ``t``; named parameters from StateRule.params()
_STATE = f"""
CASE
  WHEN t.last_seen < :offline_before THEN 'offline'
  WHEN EXISTS (SELECT 1 FROM probe_state p WHERE p.terminal_id = t.terminal_id
               AND p.state = 'fail' AND p.role IN ({", ".join(f"'{r}'" for r in FAULT_ROLES)}))
    OR EXISTS (SELECT 1 FROM device_state d WHERE d.terminal_id = t.terminal_id
               AND d.state IN ('fault', 'disconnected')) THEN 'fault'
  WHEN EXISTS (SELECT 1 FROM device_state d WHERE d.terminal_id = t.terminal_id
               AND d.state = 'warning')
    OR (t.host IS NOT NULL AND json_valid(t.host) AND (
        json_extract(t.host, '$.cpu_pct') >= :cpu
        OR json_extract(t.host, '$.mem_pct') >= :mem
        OR json_extract(t.host, '$.disk_pct') >= :disk)) THEN 'warning'
  ELSE 'ok'
END
"""

_FAILED_SINCE = (
    "(SELECT count(*) FROM txns x WHERE x.terminal_id = t.terminal_id"
    " AND x.ts >= :since AND x.failed = 1)"
)
_IN_DOUBT = (
    "(SELECT count(*) FROM txns x WHERE x.terminal_id = t.terminal_id"
    " AND x.in_doubt = 1 AND x.resolution IS NULL)"
)
#: a payment still in doubt: nobody has said how it ended
UNRESOLVED = "in_doubt = 1 AND resolution IS NULL"


def terminals_by_state(conn: sqlite3.Connection, rule: StateRule) -> dict[str, int]:
    """How many terminals are in each state (states with none are absent)."""
    rows = conn.execute(
        f"SELECT state, count(*) FROM (SELECT {_STATE} AS state FROM terminals t) GROUP BY state",
        rule.params(),
    ).fetchall()
    return {str(state): int(n) for state, n in rows}


def _all(conn: sqlite3.Connection, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


# --- fleet ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetRows:
    terminals: list[Any]  # terminal_id, store_id, state
    failed: list[Any]  # terminal_id, cause, n: failed since ``since``
    in_doubt: list[Any]  # terminal_id, n: unresolved, all time
    open_incidents: list[Any]


# Both read only a partial covering index (txns_failed_ts, txns_unresolved) and group by
# terminal; the caller maps terminals to stores.
_FAILED_BY_TERMINAL = (
    "SELECT terminal_id, cause, count(*) FROM txns"
    " WHERE failed = 1 AND ts >= ? GROUP BY terminal_id, cause"
)
_IN_DOUBT_BY_TERMINAL = (
    f"SELECT terminal_id, count(*) FROM txns WHERE {UNRESOLVED} GROUP BY terminal_id"
)


def fleet(conn: sqlite3.Connection, rule: StateRule, since: str) -> FleetRows:
    terminals = _all(
        conn, f"SELECT t.terminal_id, t.store_id, {_STATE} AS state FROM terminals t", rule.params()
    )
    failed = _all(conn, _FAILED_BY_TERMINAL, (since,))
    in_doubt = _all(conn, _IN_DOUBT_BY_TERMINAL, ())
    incidents = _all(conn, f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE ended_at IS NULL", ())
    return FleetRows(terminals, failed, in_doubt, incidents)


# --- terminals -----------------------------------------------------------------------------


def terminals_page(
    conn: sqlite3.Connection,
    rule: StateRule,
    *,
    since: str,
    store: str | None,
    state: str | None,
    after: Key | None,
    limit: int,
) -> list[Any]:
    params = {**rule.params(), "since": since, "limit": limit + 1}
    where = []
    if store is not None:
        where.append("t.store_id = :store")
        params["store"] = store
    if after is not None:
        where.append("t.terminal_id > :after")
        params["after"] = after[0]
    inner = (
        f"SELECT t.*, {_STATE} AS state FROM terminals t"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY t.terminal_id"
    )
    outer = "" if state is None else " WHERE t.state = :state"
    if state is not None:
        params["state"] = state
    sql = (
        f"SELECT t.terminal_id, t.store_id, t.state, t.last_seen, t.agent_version,"
        f" {_FAILED_SINCE} AS failed_24h, {_IN_DOUBT} AS in_doubt"
        f" FROM ({inner}) t{outer} ORDER BY t.terminal_id LIMIT :limit"
    )
    return _all(conn, sql, params)


@dataclass(frozen=True, slots=True)
class TerminalRows:
    terminal: Any
    probes: list[Any]
    devices: list[Any]
    recent_failures: list[Any]
    in_doubt: int
    open_incidents: list[Any]


def terminal(conn: sqlite3.Connection, rule: StateRule, terminal_id: str) -> TerminalRows | None:
    row = conn.execute(
        f"SELECT t.*, {_STATE} AS state FROM terminals t WHERE t.terminal_id = :id",
        {**rule.params(), "id": terminal_id},
    ).fetchone()
    if row is None:
        return None
    probes = _all(
        conn, "SELECT * FROM probe_state WHERE terminal_id = ? ORDER BY probe_key", (terminal_id,)
    )
    devices = _all(
        conn, "SELECT * FROM device_state WHERE terminal_id = ? ORDER BY device", (terminal_id,)
    )
    failures = _all(
        conn,
        "SELECT * FROM txns WHERE terminal_id = ? AND failed = 1"
        " ORDER BY ts DESC, txn_id DESC LIMIT ?",
        (terminal_id, RECENT_FAILURES),
    )
    (in_doubt,) = conn.execute(
        f"SELECT count(*) FROM txns WHERE terminal_id = ? AND {UNRESOLVED}", (terminal_id,)
    ).fetchone()
    incidents = _all(
        conn,
        f"SELECT {INCIDENT_COLUMNS} FROM incidents i WHERE i.ended_at IS NULL"
        " AND (i.terminal_id = :id"
        " OR (i.scope = 'store' AND i.store_id = :store)"
        " OR EXISTS (SELECT 1 FROM json_each(i.terminals) j WHERE j.value = :id))"
        " ORDER BY i.started_at DESC, i.id DESC",
        {"id": terminal_id, "store": row["store_id"]},
    )
    return TerminalRows(row, probes, devices, failures, int(in_doubt), incidents)


def terminal_exists(conn: sqlite3.Connection, terminal_id: str) -> bool:
    found = conn.execute("SELECT 1 FROM terminals WHERE terminal_id = ?", (terminal_id,))
    return found.fetchone() is not None


def timeline_page(
    conn: sqlite3.Connection,
    terminal_id: str,
    *,
    since: str | None,
    until: str | None,
    kinds: Sequence[str] | None,
    after: Key | None,
    limit: int,
) -> list[Any]:
    where = ["terminal_id = ?"]
    params: list[Any] = [terminal_id]
    if since is not None:
        where.append("ts >= ?")
        params.append(since)
    if until is not None:
        where.append("ts <= ?")
        params.append(until)
    if kinds:
        where.append(f"kind IN ({', '.join('?' for _ in kinds)})")
        params.extend(kinds)
    if after is not None:
        where.append("(ts, rowid) < (?, ?)")
        params.extend(after)
    params.append(limit + 1)
    return _all(
        conn,
        "SELECT rowid AS id, agent_id, seq, kind, ts, received_at, body FROM events"
        f" WHERE {' AND '.join(where)} ORDER BY ts DESC, rowid DESC LIMIT ?",
        params,
    )


# --- transactions and incidents ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnFilter:
    terminal: str | None = None
    store: str | None = None
    acquirer: str | None = None
    outcome: str | None = None
    cause: str | None = None
    in_doubt: bool | None = None
    failed: bool | None = None
    since: str | None = None
    until: str | None = None


def txns_page(
    conn: sqlite3.Connection, flt: TxnFilter, *, after: Key | None, limit: int
) -> list[Any]:
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("terminal_id", flt.terminal),
        ("store_id", flt.store),
        ("acquirer", flt.acquirer),
        ("outcome", flt.outcome),
        ("cause", flt.cause),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    failed = flt.failed
    if failed is None and flt.cause is not None:
        failed = True  # only failed payments have a cause; lets the partial index serve
    if failed is not None:  # a literal, not a parameter: the partial indexes need it
        where.append("failed = 1" if failed else "failed = 0")
    if flt.in_doubt is True:
        where.append(UNRESOLVED)
    elif flt.in_doubt is False:
        where.append(f"NOT ({UNRESOLVED})")
    if flt.since is not None:
        where.append("ts >= ?")
        params.append(flt.since)
    if flt.until is not None:
        where.append("ts <= ?")
        params.append(flt.until)
    if after is not None:
        where.append("(ts, terminal_id, txn_id) < (?, ?, ?)")
        params.extend(after)
    params.append(limit + 1)
    return _all(
        conn,
        "SELECT * FROM txns"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY ts DESC, terminal_id DESC, txn_id DESC LIMIT ?",
        params,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentFilter:
    state: str = "all"  # open | closed | all
    kind: str | None = None
    cause: str | None = None
    store: str | None = None
    acquirer: str | None = None
    since: str | None = None
    until: str | None = None


def incidents_page(
    conn: sqlite3.Connection, flt: IncidentFilter, *, after: Key | None, limit: int
) -> list[Any]:
    where: list[str] = []
    params: list[Any] = []
    if flt.state == "open":
        where.append("i.ended_at IS NULL")
    elif flt.state == "closed":
        where.append("i.ended_at IS NOT NULL")
    for column, value in (("kind", flt.kind), ("cause", flt.cause), ("acquirer", flt.acquirer)):
        if value is not None:
            where.append(f"i.{column} = ?")
            params.append(value)
    if flt.store is not None:  # the incident's own store, or a store of a terminal it hit
        where.append(
            "(i.store_id = ? OR EXISTS (SELECT 1 FROM json_each(i.terminals) j"
            " JOIN terminals t ON t.terminal_id = j.value WHERE t.store_id = ?))"
        )
        params.extend((flt.store, flt.store))
    if flt.since is not None:  # overlaps [since, until]: still open, or ended after since
        where.append("(i.ended_at IS NULL OR i.ended_at >= ?)")
        params.append(flt.since)
    if flt.until is not None:
        where.append("i.started_at <= ?")
        params.append(flt.until)
    if after is not None:
        where.append("(i.started_at, i.id) < (?, ?)")
        params.extend(after)
    params.append(limit + 1)
    return _all(
        conn,
        f"SELECT {INCIDENT_COLUMNS} FROM incidents i"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY i.started_at DESC, i.id DESC LIMIT ?",
        params,
    )


def incident(conn: sqlite3.Connection, incident_id: int) -> Any:
    sql = f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?"
    return conn.execute(sql, (incident_id,)).fetchone()
