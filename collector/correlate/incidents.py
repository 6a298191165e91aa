"""Incidents: payment incidents (a cause in a scope) and health incidents, on event time.

A *payment incident* groups the failed payments of one cause in one scope:

| cause | scope | key |
|---|---|---|
| acquirer_outage | acquirer | ``acquirer_outage:<acquirer>`` |
| power, link, gateway, isp, dns | store | ``<cause>:<store>`` |
| acquirer_path | store | ``acquirer_path:<store>:<acquirer>`` |
| device | device | ``device:<terminal>:<device>`` |
| host, clock | terminal | ``<cause>:<terminal>`` |

``unknown`` opens none. A payment belongs to at most one incident
(``txns.incident_id``) and follows its cause: when a revision moves it, the
counts of both incidents follow, and an incident left with no payment closes.
Causes the fleet rule may still turn into an acquirer outage (acquirer_path,
and an acquirer_outage that the payment's own evidence alone suggests) join an
incident only once ``fleet_window_s`` of event time has passed in the store
without the fleet rule holding; so an acquirer outage shows as ONE acquirer
incident, not a flurry of store incidents first. Other causes join at once.

A payment incident closes when its scope had no new failure for
``close_after_s`` of *event time* (against the newest event received from the
scope's terminals; for an acquirer, from the stores involved) and the current
state says its evidence recovered (the probes of the role are ok again, the
device is ok, ...). ``ended_at`` is the last sign's event time, ``closed_at``
the collector's clock.

A *health incident* needs no payment: a device in fault or disconnected (a
printer out of paper, a PIN pad unplugged, a modem without SIM) is a
``device`` incident, a UPS on battery or with a low battery a ``power`` one.
It opens after ``health_open_after_s`` of event time in trouble and closes when
the device reports ok again.

Opening and closing queue alerts (:func:`collector.alerts.outbox.enqueue`) in
the same transaction. Everything here runs inside the correlator's pass.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import structlog

from protocol import format_datetime

from ..alerts.outbox import enqueue
from ..settings import CollectorSettings
from .model import IN_DOUBT_ACTION

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


# --- where a failed payment belongs ------------------------------------------------------

#: Causes whose incident is the store's (acquirer_path also names the acquirer).
STORE_CAUSES: Final = frozenset({"power", "link", "gateway", "isp", "dns", "acquirer_path"})
TERMINAL_CAUSES: Final = frozenset({"host", "clock"})

_TITLES: Final[dict[str, str]] = {
    "power": "Store {store}: power failure",
    "link": "Store {store}: terminal network link down",
    "gateway": "Store {store}: router or LAN (gateway) failing",
    "isp": "Store {store}: internet connection (ISP) down",
    "dns": "Store {store}: names do not resolve (DNS)",
    "acquirer_path": "Store {store}: cannot reach acquirer {acquirer}",
    "acquirer_outage": "Acquirer {acquirer}: outage",
    "device": "Terminal {terminal}: PIN pad {device} failing",
    "host": "Terminal {terminal}: POS host starved (CPU, memory or disk)",
    "clock": "Terminal {terminal}: clock wrong",
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


def _title(cause: str, **names: str | None) -> str:
    return _TITLES[cause].format(**{k: v if v is not None else "?" for k, v in names.items()})


def _device_of(conn: sqlite3.Connection, evidence: str | None) -> str | None:
    """The device the verdict's first device_status evidence names."""
    for item in json.loads(evidence) if evidence else []:
        if not isinstance(item, dict) or item.get("kind") != "device_status":
            continue
        agent_id, _, seq = str(item.get("event_id", "")).rpartition(":")
        if not seq.isdigit():
            continue
        row = conn.execute(
            "SELECT body FROM events WHERE agent_id = ? AND seq = ?", (agent_id, int(seq))
        ).fetchone()
        if row is not None:
            device = json.loads(row[0]).get("device")
            if isinstance(device, str):
                return device
    return None


@dataclass(frozen=True, slots=True)
class _Txn:
    terminal_id: str
    txn_id: str
    store_id: str
    ts: str
    acquirer: str | None
    cause: str | None
    local_cause: str | None
    incident_id: int | None
    evidence: str | None
    action: str | None
    failed: bool

    @property
    def waits_for_fleet(self) -> bool:
        """A cause the fleet rule may still turn into an acquirer outage."""
        return self.cause == "acquirer_path" or (
            self.cause == "acquirer_outage" and self.local_cause == "acquirer_outage"
        )


_TXN_COLUMNS = (
    "terminal_id, txn_id, store_id, ts, acquirer, cause, local_cause, incident_id, evidence,"
    " action, failed"
)


def _load_txn(conn: sqlite3.Connection, key: tuple[str, str]) -> _Txn | None:
    row = conn.execute(
        f"SELECT {_TXN_COLUMNS} FROM txns WHERE terminal_id = ? AND txn_id = ?", key
    ).fetchone()
    if row is None:
        return None
    names = [c.strip() for c in _TXN_COLUMNS.split(",")]
    values = dict(zip(names, row, strict=True))
    values["failed"] = bool(values["failed"])
    return _Txn(**values)


def payment_scope(conn: sqlite3.Connection, txn: _Txn) -> Scope | None:
    """The incident a failed payment belongs to (None: ``unknown``, or no cause yet)."""
    cause = txn.cause
    if not txn.failed or cause is None or cause == "unknown" or cause not in _TITLES:
        return None
    names: dict[str, str | None] = {
        "store": txn.store_id,
        "acquirer": txn.acquirer,
        "terminal": txn.terminal_id,
        "device": None,
    }
    if cause == "acquirer_outage":
        return Scope(
            f"acquirer_outage:{txn.acquirer or ''}", "payments", cause, "acquirer", None,
            txn.acquirer, None, None, _title(cause, **names),
        )  # fmt: skip
    if cause in STORE_CAUSES:
        key = f"{cause}:{txn.store_id}"
        acquirer = None
        if cause == "acquirer_path":
            key += f":{txn.acquirer or ''}"
            acquirer = txn.acquirer
        return Scope(
            key, "payments", cause, "store", txn.store_id, acquirer, None, None,
            _title(cause, **names),
        )  # fmt: skip
    if cause == "device":
        device = _device_of(conn, txn.evidence)
        names["device"] = device
        return Scope(
            f"device:{txn.terminal_id}:{device or ''}", "payments", cause, "device",
            txn.store_id, None, txn.terminal_id, device, _title(cause, **names),
        )  # fmt: skip
    return Scope(
        f"{cause}:{txn.terminal_id}", "payments", cause, "terminal", txn.store_id, None,
        txn.terminal_id, None, _title(cause, **names),
    )  # fmt: skip


# --- opening, closing, counting ----------------------------------------------------------


@dataclass(slots=True)
class IncidentChanges:
    """What a pass did to incidents (for the service's counters and tests)."""

    opened: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)


def _stamp(value: datetime) -> str:
    return format_datetime(value)


def _fetch(conn: sqlite3.Connection, incident_id: int) -> dict[str, Any]:
    row = conn.execute(
        f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?", (incident_id,)
    ).fetchone()
    return incident_json(row)


def _recount(conn: sqlite3.Connection, incident_id: int) -> int:
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
    where, value = {
        "store": ("store_id = ?", store_id),
        "acquirer": ("acquirer = ? AND failed = 1", acquirer),
        "device": ("terminal_id = ?", terminal_id),
        "terminal": ("terminal_id = ?", terminal_id),
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


def _incident_action(txn: _Txn) -> str:
    action = (txn.action or "").removeprefix(IN_DOUBT_ACTION).strip()
    return action or "See the evidence of the failed payments."


class _Pass:
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
                _stamp(self.now), json.dumps(sorted(terminals)),
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
            enqueue(self.conn, self.settings.alerts, _fetch(self.conn, incident_id), "opened",
                    self.now)  # fmt: skip
        self._unannounced.clear()

    def close(self, incident_id: int, ended_at: str, reason: str) -> None:
        if incident_id in self._unannounced:  # opened and closed in one pass: both alerts
            self._unannounced.discard(incident_id)
            enqueue(self.conn, self.settings.alerts, _fetch(self.conn, incident_id), "opened",
                    self.now)  # fmt: skip
        self.conn.execute(
            "UPDATE incidents SET ended_at = max(started_at, ?), closed_at = ?"
            " WHERE id = ? AND ended_at IS NULL",
            (ended_at, _stamp(self.now), incident_id),
        )
        self.changes.closed.append(incident_id)
        incident = _fetch(self.conn, incident_id)
        enqueue(self.conn, self.settings.alerts, incident, "closed", self.now)
        log.info(
            "incident_closed",
            incident_id=incident_id,
            cause=incident["cause"],
            title=incident["title"],
            ended_at=incident["ended_at"],
            reason=reason,
        )


# --- payment incidents -------------------------------------------------------------------


def _fleet_wait_over(p: _Pass, txn: _Txn) -> bool:
    clock = p.store_clock(txn.store_id)
    if clock is None:
        return False
    due = datetime.fromisoformat(txn.ts) + timedelta(seconds=p.settings.attribution.fleet_window_s)
    return clock >= _stamp(due)


def _find_or_open(p: _Pass, scope: Scope, txn: _Txn) -> int:
    row = p.conn.execute(
        "SELECT id FROM incidents WHERE key = ? AND ended_at IS NULL", (scope.key,)
    ).fetchone()
    if row is not None:
        return int(row[0])
    # a closed incident of the same key whose time covers the payment (a late revision)
    row = p.conn.execute(
        "SELECT id FROM incidents WHERE key = ? AND started_at <= ? AND ended_at >= ?"
        " ORDER BY id DESC LIMIT 1",
        (scope.key, txn.ts, txn.ts),
    ).fetchone()
    if row is not None:
        return int(row[0])
    return p.open(scope, _incident_action(txn), txn.ts, txn.ts, [txn.terminal_id])


def _place(p: _Pass, keys: Iterable[tuple[str, str]]) -> None:
    """Put each failed payment into the incident of its cause (or none); counts follow."""
    touched: set[int] = set()
    for key in sorted(set(keys)):
        txn = _load_txn(p.conn, key)
        if txn is None:
            continue
        target = payment_scope(p.conn, txn)
        if target is not None and txn.waits_for_fleet and not _fleet_wait_over(p, txn):
            target = None  # joins later, unless the fleet rule turns it into an outage
        if txn.incident_id is not None:
            row = p.conn.execute(
                "SELECT key FROM incidents WHERE id = ?", (txn.incident_id,)
            ).fetchone()
            if target is not None and row is not None and row[0] == target.key:
                touched.add(txn.incident_id)  # stays; its in-doubt state may have changed
                continue
            p.conn.execute(
                "UPDATE txns SET incident_id = NULL WHERE terminal_id = ? AND txn_id = ?", key
            )
            touched.add(txn.incident_id)
        if target is None:
            continue
        incident_id = _find_or_open(p, target, txn)
        p.conn.execute(
            "UPDATE incidents SET started_at = min(started_at, ?),"
            " last_seen_at = max(last_seen_at, ?) WHERE id = ?",
            (txn.ts, txn.ts, incident_id),
        )
        p.conn.execute(
            "UPDATE txns SET incident_id = ? WHERE terminal_id = ? AND txn_id = ?",
            (incident_id, *key),
        )
        touched.add(incident_id)
    for incident_id in sorted(touched):
        if _recount(p.conn, incident_id) == 0:
            row = p.conn.execute(
                "SELECT last_seen_at FROM incidents WHERE id = ? AND ended_at IS NULL",
                (incident_id,),
            ).fetchone()
            if row is not None:  # every payment moved to another cause
                p.close(incident_id, row[0], "no_payments_left")


def _waiting(p: _Pass, stores: Iterable[str]) -> list[tuple[str, str]]:
    """Failed payments of these stores still waiting for the fleet window to pass."""
    floor = _stamp(
        p.now
        - timedelta(
            seconds=max(p.settings.attribution.revise_horizon_s,
                        2 * p.settings.attribution.fleet_window_s)
        )
    )  # fmt: skip
    out: list[tuple[str, str]] = []
    for store_id in sorted(set(stores)):
        out += p.conn.execute(
            "SELECT terminal_id, txn_id FROM txns WHERE store_id = ? AND ts >= ?"
            " AND failed = 1 AND incident_id IS NULL"
            " AND cause IN ('acquirer_path', 'acquirer_outage')",
            (store_id, floor),
        ).fetchall()
    return out


def _scope_terminals(p: _Pass, incident: dict[str, Any]) -> list[str]:
    scope = incident["scope"]
    if scope == "store":
        rows = p.conn.execute(
            "SELECT terminal_id FROM terminals WHERE store_id = ?", (incident["store_id"],)
        ).fetchall()
    elif scope == "acquirer":  # every terminal of the stores involved
        rows = p.conn.execute(
            "SELECT terminal_id FROM terminals WHERE store_id IN (SELECT store_id FROM terminals"
            " WHERE terminal_id IN (SELECT value FROM json_each(?)))",
            (json.dumps(incident["terminals"]),),
        ).fetchall()
    else:
        return [incident["terminal_id"]] if incident["terminal_id"] else []
    return [r[0] for r in rows]


_UPS_KINDS: Final = ("megatec_ups", "nut_ups")
#: UPS flags that mean the store's power failed (``low_battery`` as some drivers spell it)
POWER_FLAGS: Final = frozenset({"on_battery", "battery_low", "low_battery", "shutdown_active"})
_PROBE_ROLE: Final = {"link": "link", "gateway": "gateway", "isp": "isp", "dns": "dns",
                      "acquirer_path": "acquirer", "acquirer_outage": "acquirer"}  # fmt: skip


def _recovered(p: _Pass, incident: dict[str, Any], terminals: list[str]) -> str | None:
    """None while the evidence still shows the trouble; else the event time it recovered
    (or the incident's last sign when the state does not say)."""
    cause = incident["cause"]
    ids = json.dumps(terminals)
    last = str(incident["last_seen_at"])
    in_scope = "terminal_id IN (SELECT value FROM json_each(?))"
    role = _PROBE_ROLE.get(cause)
    if role is not None:
        extra, params = "", [ids, role]
        if role == "acquirer" and incident["acquirer"] is not None:
            extra, params = " AND acquirer = ?", [ids, role, incident["acquirer"]]
        failing, ok_since = p.conn.execute(
            f"SELECT sum(state = 'fail'), max(CASE WHEN state = 'ok' THEN since END)"
            f" FROM probe_state WHERE {in_scope} AND role = ?{extra}",
            params,
        ).fetchone()
        if failing:
            return None
        return max(last, ok_since or last)
    if cause == "power":
        rows = p.conn.execute(
            f"SELECT state, flags, since FROM device_state WHERE {in_scope}"
            f" AND device_kind IN (?, ?)",
            (ids, *_UPS_KINDS),
        ).fetchall()
        if any(_trouble("megatec_ups", state, json.loads(flags)) for state, flags, _ in rows):
            return None
        return max([last, *(str(since) for _, _, since in rows)])
    if cause == "device":
        if incident["device"] is not None:
            rows = p.conn.execute(
                "SELECT state, since FROM device_state WHERE terminal_id = ? AND device = ?",
                (incident["terminal_id"], incident["device"]),
            ).fetchall()
        else:
            rows = p.conn.execute(
                "SELECT state, since FROM device_state WHERE terminal_id = ?"
                " AND device_kind = 'ecr_pinpad'",
                (incident["terminal_id"],),
            ).fetchall()
        if any(state in ("fault", "disconnected") for state, _ in rows):
            return None
        return max([last, *(str(since) for _, since in rows)])
    row = p.conn.execute(
        "SELECT host, host_ts, clock_offset_ms, clock_ts FROM terminals WHERE terminal_id = ?",
        (incident["terminal_id"],),
    ).fetchone()
    if row is None:
        return last
    host, host_ts, offset, clock_ts = row
    a = p.settings.attribution
    if cause == "clock":
        if offset is not None and abs(offset) > a.clock_max_offset_ms:
            return None
        return max(last, clock_ts or last)
    if cause == "host" and host:
        sample = json.loads(host)
        if (
            float(sample.get("cpu_pct") or 0) >= a.cpu_starved_pct
            or float(sample.get("mem_pct") or 0) >= a.mem_starved_pct
            or float(sample.get("disk_pct") or 0) >= a.disk_full_pct
        ):
            return None
        return max(last, host_ts or last)
    return last


def _close_payment_incidents(p: _Pass) -> None:
    close_after = timedelta(seconds=p.settings.incidents.close_after_s)
    rows = p.conn.execute(
        f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE ended_at IS NULL AND kind = 'payments'"
        " ORDER BY id"
    ).fetchall()
    for row in rows:
        incident = incident_json(row)
        terminals = _scope_terminals(p, incident)
        clock = p.conn.execute(
            "SELECT max(last_event_ts) FROM terminals"
            " WHERE terminal_id IN (SELECT value FROM json_each(?))",
            (json.dumps(terminals),),
        ).fetchone()[0]
        quiet_until = _stamp(datetime.fromisoformat(incident["last_seen_at"]) + close_after)
        if clock is None or clock < quiet_until:
            continue
        ended = _recovered(p, incident, terminals)
        if ended is not None:
            p.close(incident["id"], min(ended, clock), "recovered")


# --- health incidents --------------------------------------------------------------------


def _trouble(device_kind: str, state: str, flags: Sequence[str]) -> str | None:
    """The cause of a health incident for a device in this state (None: no trouble)."""
    if device_kind in _UPS_KINDS and state != "ok" and POWER_FLAGS.intersection(flags):
        return "power"
    if state in ("fault", "disconnected"):
        return "device"
    return None


_HEALTH_ACTIONS: Final[dict[str, str]] = {
    "escpos_printer": (
        "Check the receipt printer (paper roll, cover, cable, power). Card payments are not "
        "affected, but receipts cannot be printed."
    ),
    "ecr_pinpad": (
        "Check the PIN pad (cable, power; reconnect it). Card payments at this till fail "
        "until it is back."
    ),
    "at_modem": (
        "Check the modem: SIM card inserted and unlocked, antenna, signal, registration with "
        "the mobile network. Payments over the cellular line fail meanwhile."
    ),
}
_POWER_ACTION = (
    "The store's mains power failed and the UPS runs on battery: check the mains supply and "
    "fuses; the tills shut down when the battery is empty."
)


def _health_scope(
    p: _Pass, terminal_id: str, device: str, device_kind: str, cause: str, reason: str | None
) -> tuple[Scope, str]:
    row = p.conn.execute(
        "SELECT store_id FROM terminals WHERE terminal_id = ?", (terminal_id,)
    ).fetchone()
    store_id = row[0] if row is not None else None
    what = f"UPS {device} on battery or low" if cause == "power" else f"{device} failing"
    title = f"Terminal {terminal_id}: {what}" + (f" ({reason})" if reason else "")
    if cause == "power":
        action = _POWER_ACTION
    else:
        action = _HEALTH_ACTIONS.get(
            device_kind, f"Check the device {device} ({device_kind}) at terminal {terminal_id}."
        )
    scope = Scope(
        f"health:{terminal_id}:{device}", "health", cause, "device", store_id, None,
        terminal_id, device, title[:300],
    )  # fmt: skip
    return scope, action


def _update_health(p: _Pass, devices: Iterable[tuple[str, str]]) -> None:
    open_after = timedelta(seconds=p.settings.incidents.health_open_after_s)
    for terminal_id, device in sorted(set(devices)):
        row = p.conn.execute(
            "SELECT d.device_kind, d.state, d.flags, d.reason, d.since, d.last_ts,"
            " t.last_event_ts FROM device_state d LEFT JOIN terminals t USING (terminal_id)"
            " WHERE d.terminal_id = ? AND d.device = ?",
            (terminal_id, device),
        ).fetchone()
        if row is None:
            continue
        kind, state, flags, reason, since, last_ts, clock = row
        cause = _trouble(kind, state, json.loads(flags))
        key = f"health:{terminal_id}:{device}"
        current = p.conn.execute(
            "SELECT id FROM incidents WHERE key = ? AND ended_at IS NULL", (key,)
        ).fetchone()
        if cause is None:
            if current is not None:
                p.close(int(current[0]), since, "device_ok")
            continue
        if current is not None:
            p.conn.execute(
                "UPDATE incidents SET last_seen_at = max(last_seen_at, ?) WHERE id = ?",
                (last_ts, current[0]),
            )
            continue
        due = _stamp(datetime.fromisoformat(since) + open_after)
        if max(clock or last_ts, last_ts) >= due:
            scope, action = _health_scope(p, terminal_id, device, kind, cause, reason)
            p.open(scope, action, since, last_ts, [terminal_id])


def _devices_in_trouble(p: _Pass) -> list[tuple[str, str]]:
    rows = p.conn.execute(
        "SELECT terminal_id, device FROM device_state WHERE state <> 'ok'"
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


# --- the entry point ---------------------------------------------------------------------


def update_incidents(
    conn: sqlite3.Connection,
    settings: CollectorSettings,
    now: datetime,
    *,
    payments: Iterable[tuple[str, str]] = (),
    devices: Iterable[tuple[str, str]] = (),
    stores: Iterable[str] = (),
) -> IncidentChanges:
    """Bring incidents up to date after a pass.

    ``payments``: failed payments (re)attributed in the pass; ``devices``: the
    (terminal, device) whose state an event touched; ``stores``: the stores
    that sent events (their event time moved on).
    """
    p = _Pass(conn, settings, now)
    _place(p, [*payments, *_waiting(p, stores)])
    devices = set(devices)
    if settings.incidents.health_open_after_s > 0:
        devices.update(_devices_in_trouble(p))
    _update_health(p, devices)
    _close_payment_incidents(p)
    p.announce()
    return p.changes
