"""The alert outbox: alerts are rows in the database until delivered or given up.

The correlator calls :func:`enqueue` inside the transaction that opens or
closes an incident, so an alert exists exactly when the incident change
committed, and survives a restart. The delivery worker (:mod:`.service`)
reads due rows with :func:`due` and records each attempt with
:func:`record_delivered`, :func:`record_retry` or :func:`record_gave_up`;
:func:`expire` gives up rows older than ``give_up_after_s``. All SQL on the
table lives here.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
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


# --- what the delivery worker reads and records (collector.alerts.service) -------------

Channel = Literal["webhook", "email"]

_PENDING = "delivered_at IS NULL AND gave_up_at IS NULL"
#: a row is at the head of its queue when no earlier row of the same incident and channel
#: is still pending: an incident's "closed" alert never overtakes its "opened" alert
_HEAD = (
    "NOT EXISTS (SELECT 1 FROM alert_outbox AS b WHERE b.incident_id = a.incident_id"
    " AND b.channel = a.channel AND b.id < a.id"
    " AND b.delivered_at IS NULL AND b.gave_up_at IS NULL)"
)


@dataclass(frozen=True, slots=True)
class Alert:
    """One pending row of the outbox: one alert for one channel."""

    id: int
    incident_id: int
    transition: Transition
    channel: Channel
    payload: str  # JSON text, sent as it is (webhook) or turned into an e-mail
    created_at: datetime
    attempts: int  # attempts made so far


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)  # format_datetime's "...Z": aware UTC


def _marks(names: tuple[str, ...]) -> str:
    return ", ".join("?" for _ in names)


def due(
    conn: sqlite3.Connection, channels: tuple[str, ...], now: datetime, limit: int
) -> list[Alert]:
    """Pending rows of these channels whose next attempt is due, oldest first."""
    if not channels:
        return []
    rows = conn.execute(
        "SELECT id, incident_id, transition, channel, payload, created_at, attempts"
        f" FROM alert_outbox AS a WHERE {_PENDING} AND next_attempt_at <= ?"
        f" AND channel IN ({_marks(channels)}) AND {_HEAD} ORDER BY id LIMIT ?",
        (format_datetime(now), *channels, limit),
    ).fetchall()
    return [Alert(r[0], r[1], r[2], r[3], r[4], _at(r[5]), r[6]) for r in rows]


def next_due(conn: sqlite3.Connection, channels: tuple[str, ...]) -> dict[str, datetime]:
    """Per channel, when its earliest pending row (at the head of its queue) is due."""
    if not channels:
        return {}
    rows = conn.execute(
        f"SELECT channel, min(next_attempt_at) FROM alert_outbox AS a WHERE {_PENDING}"
        f" AND channel IN ({_marks(channels)}) AND {_HEAD} GROUP BY channel",
        channels,
    ).fetchall()
    return {channel: _at(at) for channel, at in rows}


@dataclass(frozen=True, slots=True)
class Expired:
    """A row given up because it was not delivered in time."""

    id: int
    incident_id: int
    transition: Transition
    channel: str
    attempts: int
    last_error: str | None


def expire(conn: sqlite3.Connection, now: datetime, give_up_after_s: float) -> list[Expired]:
    """Give up every pending row queued more than ``give_up_after_s`` ago; returns them."""
    cutoff = format_datetime(now - timedelta(seconds=give_up_after_s))
    rows = conn.execute(
        "SELECT id, incident_id, transition, channel, attempts, last_error FROM alert_outbox"
        f" WHERE {_PENDING} AND created_at <= ? ORDER BY id",
        (cutoff,),
    ).fetchall()
    stamp = format_datetime(now)
    for row in rows:
        reason = f"not delivered within {give_up_after_s:g} s"
        error = f"{reason}; last error: {row[5]}" if row[5] else reason
        conn.execute(
            "UPDATE alert_outbox SET gave_up_at = ?, last_error = ? WHERE id = ?",
            (stamp, error, row[0]),
        )
    return [Expired(*row) for row in rows]


def record_delivered(
    conn: sqlite3.Connection, alert_id: int, now: datetime, note: str | None = None
) -> None:
    """The alert was delivered (``note``: e.g. the recipients an SMTP server refused)."""
    conn.execute(
        "UPDATE alert_outbox SET delivered_at = ?, attempts = attempts + 1, last_error = ?"
        " WHERE id = ?",
        (format_datetime(now), note, alert_id),
    )


def record_retry(
    conn: sqlite3.Connection, alert_id: int, error: str, next_attempt_at: datetime
) -> None:
    """An attempt failed and will be repeated at ``next_attempt_at``."""
    conn.execute(
        "UPDATE alert_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
        " WHERE id = ?",
        (format_datetime(next_attempt_at), error, alert_id),
    )


def record_gave_up(conn: sqlite3.Connection, alert_id: int, error: str, now: datetime) -> None:
    """An attempt failed in a way retrying cannot fix (the receiver refuses the alert)."""
    conn.execute(
        "UPDATE alert_outbox SET attempts = attempts + 1, gave_up_at = ?, last_error = ?"
        " WHERE id = ?",
        (format_datetime(now), error, alert_id),
    )
