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
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from ..settings import CollectorSettings
from .health import devices_in_trouble, update_health
from .incident_base import (
    INCIDENT_COLUMNS,
    UPS_KINDS,
    IncidentChanges,
    IncidentPass,
    Scope,
    incident_json,
    recount,
    stamp,
    trouble,
)
from .model import IN_DOUBT_ACTION

__all__ = ["INCIDENT_COLUMNS", "IncidentChanges", "Scope", "incident_json", "update_incidents"]


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


def _incident_action(txn: _Txn) -> str:
    action = (txn.action or "").removeprefix(IN_DOUBT_ACTION).strip()
    return action or "See the evidence of the failed payments."


# --- payment incidents -------------------------------------------------------------------


def _fleet_wait_over(p: IncidentPass, txn: _Txn) -> bool:
    clock = p.store_clock(txn.store_id)
    if clock is None:
        return False
    due = datetime.fromisoformat(txn.ts) + timedelta(seconds=p.settings.attribution.fleet_window_s)
    return clock >= stamp(due)


def _find_or_open(p: IncidentPass, scope: Scope, txn: _Txn) -> int:
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


def _place(p: IncidentPass, keys: Iterable[tuple[str, str]]) -> None:
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
        if recount(p.conn, incident_id) == 0:
            row = p.conn.execute(
                "SELECT last_seen_at FROM incidents WHERE id = ? AND ended_at IS NULL",
                (incident_id,),
            ).fetchone()
            if row is not None:  # every payment moved to another cause
                p.close(incident_id, row[0], "no_payments_left")


def _waiting(p: IncidentPass, stores: Iterable[str]) -> list[tuple[str, str]]:
    """Failed payments of these stores still waiting for the fleet window to pass."""
    floor = stamp(
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


def _scope_terminals(p: IncidentPass, incident: dict[str, Any]) -> list[str]:
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


_PROBE_ROLE: Final = {"link": "link", "gateway": "gateway", "isp": "isp", "dns": "dns",
                      "acquirer_path": "acquirer", "acquirer_outage": "acquirer"}  # fmt: skip


def _recovered(p: IncidentPass, incident: dict[str, Any], terminals: list[str]) -> str | None:
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
            (ids, *UPS_KINDS),
        ).fetchall()
        if any(trouble("megatec_ups", state, json.loads(flags)) for state, flags, _ in rows):
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


def _close_payment_incidents(p: IncidentPass) -> None:
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
        quiet_until = stamp(datetime.fromisoformat(incident["last_seen_at"]) + close_after)
        if clock is None or clock < quiet_until:
            continue
        ended = _recovered(p, incident, terminals)
        if ended is not None:
            p.close(incident["id"], min(ended, clock), "recovered")


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
    p = IncidentPass(conn, settings, now)
    _place(p, [*payments, *_waiting(p, stores)])
    devices = set(devices)
    if settings.incidents.health_open_after_s > 0:
        devices.update(devices_in_trouble(p))
    update_health(p, devices)
    _close_payment_incidents(p)
    p.announce()
    return p.changes
