"""The alert outbox: alerts are rows in the database until delivered or given up.

The correlator calls :func:`enqueue` inside the transaction that opens or
closes an incident, so an alert exists exactly when the incident change
committed, and survives a restart. The delivery worker (:mod:`.service`)
reads due rows and sends them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from protocol import format_datetime

from ..settings import AlertSettings

Transition = Literal["opened", "closed"]


def channels(settings: AlertSettings) -> tuple[str, ...]:
    """The channels alerts go to with these settings (none: alerts are off)."""
    out: list[str] = []
    if settings.webhook_url is not None:
        out.append("webhook")
    if settings.smtp_host is not None:
        out.append("email")
    return tuple(out)


def enqueue(
    conn: sqlite3.Connection,
    settings: AlertSettings,
    incident: Mapping[str, Any],
    transition: Transition,
    now: datetime,
) -> int:
    """Queue one alert per configured channel; returns how many rows were added.

    ``incident`` is the incident as the API shows it (it must have ``id``).
    Runs in the caller's transaction.
    """
    stamp = format_datetime(now)
    payload = json.dumps(
        {"event": f"incident_{transition}", "incident": dict(incident)},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    added = 0
    for channel in channels(settings):
        conn.execute(
            "INSERT INTO alert_outbox (incident_id, transition, channel, payload, created_at,"
            " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?)",
            (int(incident["id"]), transition, channel, payload, stamp, stamp),
        )
        added += 1
    return added
