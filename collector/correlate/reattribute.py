"""``posmon-collector reattribute``: recompute the causes of failed payments in a time range.

    posmon-collector reattribute --db PATH --since WHEN [--until WHEN]
    posmon-collector reattribute --config FILE --since 2h

For every failed payment that ended in the range it recomputes this store's
verdict, then the fleet rule, and moves the payment to the incident of its new
cause (opening or closing incidents, and queueing their alerts, as the running
correlator would). Use it after changing the ``[attribution]`` settings, or to
look again at payments older than ``revise_horizon_s``.

It opens the database itself, so it is safe while the server runs: the two
take turns on SQLite's write lock (busy timeout), one batch of payments at a
time. Progress goes to stderr on long runs; the summary (how many payments,
how many changed cause, the count per cause) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import sqlite3
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from protocol import format_datetime

from ..command import EXIT_USAGE, CommandError
from ..settings import CollectorSettings, load_settings
from ..storage import StorageError
from ..storage.sqlite import SqliteStorage
from .attribute import final_verdict, local_verdict
from .incidents import update_incidents
from .txns import attribute

#: Payments (re)attributed per transaction: the server's ingest waits at most this long.
BATCH: Final = 200
_AGO = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, now: datetime, flag: str) -> datetime:
    """An ISO 8601 time (UTC when it has no zone) or a span ago (``90s``, ``2h``, ``3d``)."""
    match = _AGO.match(text)
    if match is not None:
        return now - timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(
            f"{flag}: {text!r} is neither an ISO 8601 time (2026-03-01T12:00:00Z) nor a span "
            "ago like 30m, 2h or 3d",
            EXIT_USAGE,
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def add_parser(commands: Any) -> None:
    """Add ``reattribute`` to the ``posmon-collector`` subcommands."""
    parser = commands.add_parser(
        "reattribute",
        help="recompute the causes of failed payments in a time range",
        description=(
            "Recompute the cause, confidence, evidence and action of every failed payment "
            "that ended in [--since, --until], and their incidents, with the current rules "
            "and [attribution] settings. Safe while the server runs. Prints the number of "
            "payments, how many changed cause, and the count per cause."
        ),
        epilog="Example: posmon-collector reattribute --config collector.toml --since 2d",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="collector TOML settings ([server] db and the [attribution] and [incidents] keys)",
    )
    parser.add_argument("--db", metavar="PATH", help="SQLite database file (overrides --config)")
    parser.add_argument(
        "--since",
        required=True,
        metavar="WHEN",
        help="start of the range: ISO 8601 (2026-03-01T12:00:00Z) or a span ago (30m, 2h, 3d)",
    )
    parser.add_argument(
        "--until", metavar="WHEN", help="end of the range, same forms (default: now)"
    )
    parser.set_defaults(run=run)


@dataclasses.dataclass
class Summary:
    payments: int = 0
    changed: int = 0
    by_cause: Counter[str] = dataclasses.field(default_factory=Counter)


def _keys(conn: sqlite3.Connection, since: str, until: str) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT terminal_id, txn_id FROM txns WHERE ts >= ? AND ts <= ? AND failed = 1"
        " ORDER BY ts, terminal_id, txn_id",
        (since, until),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def _causes(conn: sqlite3.Connection, since: str, until: str) -> Counter[str]:
    rows = conn.execute(
        "SELECT coalesce(cause, 'unattributed'), count(*) FROM txns"
        " WHERE ts >= ? AND ts <= ? AND failed = 1 GROUP BY 1",
        (since, until),
    ).fetchall()
    return Counter({r[0]: int(r[1]) for r in rows})


async def reattribute(
    settings: CollectorSettings, since: datetime, until: datetime, *, progress: bool = True
) -> Summary:
    """Recompute the failed payments that ended in [since, until]. Raises StorageError."""
    now = datetime.now(UTC)
    # the range may reach past the horizon: let the fleet rule see all of it
    reach = int((now - since).total_seconds()) + settings.attribution.fleet_window_s + 1
    attribution = dataclasses.replace(
        settings.attribution, revise_horizon_s=max(settings.attribution.revise_horizon_s, reach)
    )
    first, last = format_datetime(since), format_datetime(until)
    storage = SqliteStorage(settings.db)
    await storage.open()
    summary = Summary()
    try:
        keys = await storage.writer.read(lambda conn: _keys(conn, first, last))
        for start in range(0, len(keys), BATCH):
            chunk = set(keys[start : start + BATCH])

            def work(conn: sqlite3.Connection, chunk: set[tuple[str, str]] = chunk) -> int:
                stamp = datetime.now(UTC)
                done = attribute(conn, chunk, attribution, stamp, local_verdict, final_verdict)
                update_incidents(conn, settings, stamp, payments=done.changed)
                return done.revised

            summary.changed += await storage.writer.write(work)
            summary.payments += len(chunk)
            if progress and len(keys) > BATCH:
                print(f"reattribute: {summary.payments}/{len(keys)} payments", file=sys.stderr)
        summary.by_cause = await storage.writer.read(lambda conn: _causes(conn, first, last))
    finally:
        await storage.close()
    return summary


def run(args: argparse.Namespace) -> int:
    """The command: exit 0 done, 1 the database failed, 2 bad usage."""
    from agent.logs import configure_logging

    settings = load_settings(config=args.config, overrides={"db": args.db})
    now = datetime.now(UTC)
    since = parse_when(args.since, now, "--since")
    until = parse_when(args.until, now, "--until") if args.until else now
    if since > until:
        raise CommandError("--since: is later than --until", EXIT_USAGE)
    if not Path(settings.db).is_file():
        raise CommandError(f"--db: {settings.db}: no such database file", EXIT_USAGE)
    configure_logging("warning")  # stdout is for the summary
    try:
        summary = asyncio.run(reattribute(settings, since, until))
    except StorageError as err:
        raise CommandError(f"database: {err}") from None
    print(
        f"Reattributed {summary.payments} failed payments from {format_datetime(since)} to "
        f"{format_datetime(until)}; {summary.changed} changed cause."
    )
    for cause, n in sorted(summary.by_cause.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {cause:<16} {n}")
    return 0
