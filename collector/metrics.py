"""``GET /metrics``: the collector's aggregates in Prometheus text format 0.0.4.

No authentication, so no terminal, store or acquirer ids in labels: every
label's values come from a short fixed list (states, causes, incident kinds,
alert channels, HTTP statuses), which keeps the number of series bounded
whatever the fleet's size.

What is exported, and where it comes from:

- ``posmon_terminals{state}`` gauge — terminals by state (``ok``, ``warning``,
  ``fault``, ``offline``), by the query API's own rule (:class:`~collector.api.queries.StateRule`).
- ``posmon_failed_payments{cause,window="24h"}`` gauge — failed payments that
  ended in the last 24 hours, by cause (``pending`` while the correlator has
  not named one yet). A gauge over a window, not a counter: reattribution may
  move a payment from one cause to another, so a per-cause count can go down.
- ``posmon_in_doubt_payments`` gauge — in-doubt payments not yet resolved, all time.
- ``posmon_open_incidents{kind,cause}`` gauge.
- ``posmon_ingest_reports_total``, ``posmon_ingest_events_total``,
  ``posmon_ingest_duplicates_total``, ``posmon_ingest_rejected_total{status}``
  counters — what ingest did since this process started.
- ``posmon_correlator_pending_events`` and ``posmon_correlator_pending_payments``
  gauges, ``posmon_correlator_max_pass_milliseconds``, and
  ``posmon_correlator_attributed_total`` and ``posmon_correlator_revised_total``
  counters — from the correlator's
  ``status()``; absent when the correlator is not running.
- ``posmon_alerts_pending{channel}`` gauge and ``posmon_alerts_failed_total{channel}``
  counter (alerts given up) — from the alert outbox.

The database figures are read on a short-lived read-only SQLite connection in
a worker thread: a scrape neither blocks the event loop nor waits behind the
writer's queue. A database that cannot be read answers 503.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from protocol import format_datetime
from protocol.causes import Cause

from . import app as collector_app  # a module: app.py imports this one while loading
from .api.queries import UNRESOLVED, StateRule, terminals_by_state
from .correlate import service as correlate_service
from .settings import AttributionSettings

METRICS_PATH: Final = "/metrics"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
READ_TIMEOUT_S: Final = 10.0

TERMINAL_STATES: Final = ("ok", "warning", "fault", "offline")
#: the probe roles whose failure puts a terminal in ``fault``
#: the (kind, cause) pairs exported even at zero: a payment incident has any cause,
#: a health incident a device or power one (others found in the table are added)
INCIDENT_SERIES: Final = (
    *(("payments", c.value) for c in Cause),
    ("health", Cause.DEVICE.value),
    ("health", Cause.POWER.value),
)
ALERT_CHANNELS: Final = ("webhook", "email")
PENDING_CAUSE: Final = "pending"
FAILED_WINDOW: Final = timedelta(hours=24)

Labels = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class Family:
    """One metric with its HELP, TYPE and samples (labels, value)."""

    name: str
    kind: str  # gauge | counter
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((tuple(labels.items()), value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def render(families: Iterable[Family]) -> str:
    """The text exposition format 0.0.4 of ``families``."""
    lines: list[str] = []
    for family in families:
        help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"# HELP {family.name} {help_text}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for labels, value in family.samples:
            if labels:
                inner = ",".join(f'{key}="{_escape_label(val)}"' for key, val in labels)
                lines.append(f"{family.name}{{{inner}}} {_number(value)}")
            else:
                lines.append(f"{family.name} {_number(value)}")
    return "\n".join(lines) + "\n"


# --- figures from the database -------------------------------------------------------------

_FAILED_SQL = """
SELECT coalesce(cause, ?), count(*) FROM txns
WHERE failed = 1 AND ts >= ? GROUP BY 1
"""
_IN_DOUBT_SQL = f"SELECT count(*) FROM txns WHERE {UNRESOLVED}"
_INCIDENTS_SQL = """
SELECT kind, cause, count(*) FROM incidents WHERE ended_at IS NULL GROUP BY kind, cause
"""
_ALERTS_SQL = """
SELECT channel,
       coalesce(sum(delivered_at IS NULL AND gave_up_at IS NULL), 0),
       coalesce(sum(gave_up_at IS NOT NULL), 0)
FROM alert_outbox GROUP BY channel
"""


@dataclass(slots=True)
class DbFigures:
    terminals: dict[str, int]
    failed: dict[str, int]
    in_doubt: int
    incidents: dict[tuple[str, str], int]
    alerts_pending: dict[str, int]
    alerts_failed: dict[str, int]


def read_figures(conn: sqlite3.Connection, rules: AttributionSettings, now: datetime) -> DbFigures:
    """Everything /metrics shows from the database, read in one go."""
    terminals = dict.fromkeys(TERMINAL_STATES, 0)
    terminals.update(terminals_by_state(conn, StateRule.of(rules, now)))
    failed = dict.fromkeys([*(c.value for c in Cause), PENDING_CAUSE], 0)
    since = format_datetime(now - FAILED_WINDOW)
    for cause, n in conn.execute(_FAILED_SQL, (PENDING_CAUSE, since)):
        failed[str(cause)] = int(n)
    (in_doubt,) = conn.execute(_IN_DOUBT_SQL).fetchone()
    incidents = dict.fromkeys(INCIDENT_SERIES, 0)
    for kind, cause, n in conn.execute(_INCIDENTS_SQL):
        incidents[(str(kind), str(cause))] = int(n)
    pending = dict.fromkeys(ALERT_CHANNELS, 0)
    gave_up = dict.fromkeys(ALERT_CHANNELS, 0)
    for channel, waiting, given_up in conn.execute(_ALERTS_SQL):
        pending[str(channel)] = int(waiting)
        gave_up[str(channel)] = int(given_up)
    return DbFigures(terminals, failed, int(in_doubt), incidents, pending, gave_up)


def _read_database(path: str, rules: AttributionSettings, now: datetime) -> DbFigures:
    """Open ``path`` read-only, read the figures, close. Raises ``sqlite3.Error``."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=READ_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(READ_TIMEOUT_S * 1000)}")
        conn.execute("BEGIN")  # one snapshot for every figure
        try:
            return read_figures(conn, rules, now)
        finally:
            conn.execute("COMMIT")
    finally:
        conn.close()


# --- families ------------------------------------------------------------------------------


def database_families(figures: DbFigures) -> list[Family]:
    terminals = Family(
        "posmon_terminals", "gauge", "Terminals by state (ok, warning, fault, offline)."
    )
    for state, n in figures.terminals.items():
        terminals.add(n, state=state)
    failed = Family(
        "posmon_failed_payments",
        "gauge",
        "Failed payments that ended in the last 24 hours, by cause "
        "(pending: not attributed yet). Reattribution can move a payment between causes.",
    )
    for cause, n in sorted(figures.failed.items()):
        failed.add(n, cause=cause, window="24h")
    in_doubt = Family(
        "posmon_in_doubt_payments", "gauge", "In-doubt payments not yet resolved (all time)."
    )
    in_doubt.add(figures.in_doubt)
    incidents = Family("posmon_open_incidents", "gauge", "Open incidents by kind and cause.")
    for (kind, cause), n in sorted(figures.incidents.items()):
        incidents.add(n, kind=kind, cause=cause)
    pending = Family(
        "posmon_alerts_pending", "gauge", "Incident alerts waiting to be delivered, by channel."
    )
    gave_up = Family(
        "posmon_alerts_failed_total",
        "counter",
        "Incident alerts given up after retrying, by channel (from the alert outbox).",
    )
    for channel in sorted(figures.alerts_pending):
        pending.add(figures.alerts_pending[channel], channel=channel)
        gave_up.add(figures.alerts_failed.get(channel, 0), channel=channel)
    return [terminals, failed, in_doubt, incidents, pending, gave_up]


def ingest_families(counters: collector_app.IngestCounters) -> list[Family]:
    reports = Family(
        "posmon_ingest_reports_total", "counter", "Agent reports accepted since start-up."
    )
    reports.add(counters.reports)
    events = Family("posmon_ingest_events_total", "counter", "New events stored since start-up.")
    events.add(counters.events_stored)
    duplicates = Family(
        "posmon_ingest_duplicates_total",
        "counter",
        "Events received again and dropped as duplicates since start-up.",
    )
    duplicates.add(counters.duplicates)
    rejected = Family(
        "posmon_ingest_rejected_total",
        "counter",
        "Reports refused since start-up, by HTTP status.",
    )
    for status in sorted(counters.rejected):
        rejected.add(counters.rejected[status], status=str(status))
    return [reports, events, duplicates, rejected]


def _status_value(status: Any, *names: str) -> float | None:
    for name in names:
        value = status.get(name) if isinstance(status, Mapping) else getattr(status, name, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def correlator_families(app: web.Application) -> list[Family]:
    """From the correlator's ``status()`` when one runs in this app; none otherwise."""
    key = getattr(correlate_service, "CORRELATOR_KEY", None)
    if key is None or key not in app:
        return []
    status = app[key].status()
    out: list[Family] = []
    for key_name, name, kind, text in _CORRELATOR_SERIES:
        value = _status_value(status, key_name)
        if value is not None:
            family = Family(name, kind, text)
            family.add(value)
            out.append(family)
    return out


#: the correlator's status() field -> (metric, type, help)
_CORRELATOR_SERIES: Final = (
    ("pending_events", "posmon_correlator_pending_events", "gauge",
     "Stored events the correlator has not read yet."),
    ("pending_payments", "posmon_correlator_pending_payments", "gauge",
     "Failed payments waiting for their first cause or a revision."),
    ("attributed_total", "posmon_correlator_attributed_total", "counter",
     "Failed payments the correlator attributed since start-up."),
    ("revised_total", "posmon_correlator_revised_total", "counter",
     "Attributions revised since start-up because later evidence arrived."),
    ("max_pass_ms", "posmon_correlator_max_pass_milliseconds", "gauge",
     "The longest a correlator pass held the database writer since start-up."),
)  # fmt: skip


# --- the handler ---------------------------------------------------------------------------

_LOCK_KEY: Final = web.AppKey("metrics_lock", asyncio.Lock)


async def get_metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: aggregates only; no authentication."""
    app = request.app
    settings = app[collector_app.SETTINGS_KEY]
    path = getattr(app[collector_app.STORAGE_KEY], "path", None)
    if not isinstance(path, str):
        return collector_app.error_response(503, "metrics need the SQLite storage")
    now = datetime.now(UTC)
    try:
        async with app[_LOCK_KEY]:  # one scrape reads at a time
            figures = await asyncio.to_thread(_read_database, path, settings.attribution, now)
    except sqlite3.Error as err:
        return collector_app.error_response(503, f"cannot read the database for metrics: {err}")
    families = [
        *database_families(figures),
        *ingest_families(app[collector_app.COUNTERS_KEY]),
        *correlator_families(app),
    ]
    return web.Response(body=render(families).encode(), headers={"Content-Type": CONTENT_TYPE})


def setup(app: web.Application) -> None:
    """Add ``GET /metrics`` to the collector's app."""
    app[_LOCK_KEY] = asyncio.Lock()
    app.router.add_get(METRICS_PATH, get_metrics)
