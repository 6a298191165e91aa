"""Health incidents: a device in trouble, even when no payment failed (see :mod:`.incidents`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final

from .incident_base import IncidentPass, Scope, stamp, trouble

# --- health incidents --------------------------------------------------------------------


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
    p: IncidentPass, terminal_id: str, device: str, device_kind: str, cause: str, reason: str | None
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


def update_health(p: IncidentPass, devices: Iterable[tuple[str, str]]) -> None:
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
        cause = trouble(kind, state, json.loads(flags))
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
        due = stamp(datetime.fromisoformat(since) + open_after)
        if max(clock or last_ts, last_ts) >= due:
            scope, action = _health_scope(p, terminal_id, device, kind, cause, reason)
            p.open(scope, action, since, last_ts, [terminal_id])


def devices_in_trouble(p: IncidentPass) -> list[tuple[str, str]]:
    rows = p.conn.execute(
        "SELECT terminal_id, device FROM device_state WHERE state <> 'ok'"
    ).fetchall()
    return [(r[0], r[1]) for r in rows]
