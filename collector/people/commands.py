"""The ``posmon`` commands: argument parsing, one function per command.

Every command reads the collector's query API with a viewer token, prints
a readable report (tables, times in UTC) or, with ``--json``, the API's JSON:
one object for ``fleet``, ``terminal`` and ``incident``; one array of items
for ``terminals``, ``txns``, ``incidents`` and ``timeline`` (all the pages
asked for, joined).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from protocol.causes import Cause

from . import views
from .client import Client, CliError, path_of
from .when import HELP as WHEN_HELP
from .when import parse_when

PROG = "posmon"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_LIMIT = 50
MAX_LIMIT = 100_000
TERMINAL_STATES = ("ok", "warning", "fault", "offline")
OUTCOMES = ("approved", "declined", "timeout", "error")
EVENT_KINDS = ("probe_window", "probe_change", "device_status", "host_sample", "txn", "agent_event")
CAUSES = tuple(c.value for c in Cause)

Command = Callable[[argparse.Namespace, Client], int]


def _when(text: str) -> str:
    try:
        return parse_when(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number from 1 to {MAX_LIMIT}")
    return int(text)


def _incident_id(text: str) -> str:
    if not text.isdigit() or len(text) > 18:
        raise argparse.ArgumentTypeError(f"{text!r}: an incident id is a number")
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds, more than 0, up to 3600")
    return value


def _connection_options(parser: argparse.ArgumentParser) -> None:
    """On the main parser and every command, so they may go before or after the command."""
    group = parser.add_argument_group("collector and output")
    group.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="the collector, like https://collector.example:8780 (default: $POSMON_URL)",
    )
    group.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        metavar="TOKEN",
        help="a viewer token (default: $POSMON_TOKEN); create one with "
        "'posmon-collector token create --db PATH --viewer NAME'",
    )
    group.add_argument(
        "--cafile",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="CA certificate(s) to verify an https collector with (default: $POSMON_CAFILE, "
        "else the system's)",
    )
    group.add_argument(
        "--timeout",
        type=_seconds,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help=f"give up on a request after this long (default {DEFAULT_TIMEOUT_S:g})",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the API's JSON instead of tables (an object, or an array of items)",
    )


def _list_options(parser: argparse.ArgumentParser, *, all_pages: bool = True) -> None:
    parser.add_argument(
        "--limit",
        type=_limit,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"show at most N items, newest first (default {DEFAULT_LIMIT})",
    )
    if all_pages:
        parser.add_argument(
            "--all",
            action="store_true",
            dest="all_pages",
            help="show every item (follows the API's pages; overrides --limit)",
        )


def _time_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=_when, metavar="WHEN", help=f"from this time: {WHEN_HELP}")
    parser.add_argument("--until", type=_when, metavar="WHEN", help="up to this time (as --since)")


def _add(
    commands: Any, name: str, run: Command, summary: str, description: str, examples: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 78),
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=run)
    _connection_options(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "posmon's CLI for central IT and technicians: fleet health, one terminal's state "
            "and history, failed payments with their cause, in-doubt payments, incidents. "
            "It reads the collector's query API with a viewer token."
        ),
        epilog=(
            "environment: POSMON_URL (the collector), POSMON_TOKEN (a viewer token), "
            "POSMON_CAFILE. Exit status: 0 done; 1 the collector could not be reached, refused "
            "the token or failed; 2 bad usage (no URL or token, a bad option). "
            "'posmon COMMAND --help' shows each command with examples."
        ),
    )
    _connection_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add(
        commands,
        "fleet",
        cmd_fleet,
        "the whole fleet at a glance",
        "Terminals by state, failed payments in the last 24 hours by cause, unresolved "
        "in-doubt payments, open incidents, and every store, worst first.",
        "  posmon fleet\n  posmon fleet --json | jq .stores[0]\n",
    )

    terminals = _add(
        commands,
        "terminals",
        cmd_terminals,
        "list terminals",
        "Terminals with their state (ok, warning, fault, offline), last contact, agent "
        "version, failed payments in the last 24 hours and in-doubt payments.",
        "  posmon terminals --state fault\n  posmon terminals --store S-042 --all\n",
    )
    terminals.add_argument("--store", metavar="ID", help="only this store's terminals")
    terminals.add_argument("--state", choices=TERMINAL_STATES, help="only terminals in this state")
    _list_options(terminals)

    terminal = _add(
        commands,
        "terminal",
        cmd_terminal,
        "one terminal, for a technician",
        "Everything about one terminal: state, last seen, spool backlog, clock offset, "
        "host resources, each probe and device with its state and since when, recent "
        "failed payments with their cause and the action to take, open incidents.",
        "  posmon terminal T-0042\n  posmon terminal T-0042 --json\n",
    )
    terminal.add_argument("terminal_id", metavar="ID", help="the terminal id")

    txns = _add(
        commands,
        "txns",
        cmd_txns,
        "payments with their cause",
        "Failed payments (timeouts, errors, technical declines), newest first, each with its "
        "cause, confidence, the evidence in plain words and the action to take. In-doubt "
        "payments (the customer may have been charged) are marked IN DOUBT.",
        "  posmon txns --since 2h\n  posmon txns --in-doubt --all\n"
        "  posmon txns --cause acquirer_outage --acquirer ACQ-1 --since 1d\n"
        "  posmon txns --terminal T-0042 --any-outcome --limit 20\n",
    )
    txns.add_argument(
        "--in-doubt", action="store_true", help="only in-doubt payments nobody has resolved yet"
    )
    txns.add_argument(
        "--cause", choices=CAUSES, metavar="CAUSE", help=f"only this cause: {', '.join(CAUSES)}"
    )
    txns.add_argument("--terminal", metavar="ID", help="only this terminal's payments")
    txns.add_argument("--store", metavar="ID", help="only this store's payments")
    txns.add_argument("--acquirer", metavar="NAME", help="only payments to this acquirer")
    txns.add_argument("--outcome", choices=OUTCOMES, help="only this outcome (any failed or not)")
    txns.add_argument(
        "--any-outcome",
        action="store_true",
        help="approved and declined payments too (default: failed ones only)",
    )
    _time_options(txns)
    _list_options(txns)

    incidents = _add(
        commands,
        "incidents",
        cmd_incidents,
        "incidents (open by default)",
        "Payment incidents (a cause in a store, an acquirer, a device) and health incidents "
        "(printer paper end, UPS on battery), newest first, open ones unless told otherwise.",
        "  posmon incidents\n  posmon incidents --all --since 1w --cause acquirer_outage\n"
        "  posmon incidents --closed --store S-042\n",
    )
    state = incidents.add_mutually_exclusive_group()
    state.add_argument(
        "--open",
        action="store_const",
        dest="state",
        const="open",
        help="open incidents (the default)",
    )
    state.add_argument(
        "--closed", action="store_const", dest="state", const="closed", help="closed incidents"
    )
    state.add_argument(
        "--all", action="store_const", dest="state", const="all", help="open and closed incidents"
    )
    incidents.add_argument("--kind", choices=("payments", "health"), help="only this kind")
    incidents.add_argument("--cause", choices=CAUSES, metavar="CAUSE", help="only this cause")
    incidents.add_argument("--store", metavar="ID", help="only incidents in this store")
    incidents.add_argument("--acquirer", metavar="NAME", help="only incidents of this acquirer")
    _time_options(incidents)
    _list_options(incidents, all_pages=False)

    incident = _add(
        commands,
        "incident",
        cmd_incident,
        "one incident",
        "One incident: what, where, since when, which terminals, how many payments failed "
        "or are in doubt, and what to do.",
        "  posmon incident 17\n",
    )
    incident.add_argument(
        "incident_id", type=_incident_id, metavar="ID", help="the incident's number"
    )

    timeline = _add(
        commands,
        "timeline",
        cmd_timeline,
        "one terminal's events, newest first",
        "The events a terminal's agent sent (probe windows and changes, device status, host "
        "samples, payments, agent events), newest first, each summed up in one line.",
        "  posmon timeline T-0042 --since 30m\n  posmon timeline T-0042 --kind device_status\n",
    )
    timeline.add_argument("terminal_id", metavar="ID", help="the terminal id")
    timeline.add_argument("--kind", choices=EVENT_KINDS, help="only events of this kind")
    _time_options(timeline)
    _list_options(timeline)
    return parser


# --- output --------------------------------------------------------------------------------


def _json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _more(shown: int) -> None:
    print(f"({shown} shown; there are more: use --limit N or --all)", file=sys.stderr)


def _list(
    args: argparse.Namespace,
    client: Client,
    path: str,
    params: Mapping[str, str | None],
    render: Callable[[list[dict[str, Any]]], str],
) -> int:
    limit = None if getattr(args, "all_pages", False) else args.limit
    items, more = client.items(path, params, limit=limit)
    if args.json:
        _json(items)
    else:
        print(render(items))
    if more:
        _more(len(items))
    return 0


def _now() -> datetime:
    return datetime.now(UTC)


# --- commands ------------------------------------------------------------------------------


def cmd_fleet(args: argparse.Namespace, client: Client) -> int:
    fleet = client.get(path_of("fleet"))
    if args.json:
        _json(fleet)
    else:
        print(views.render_fleet(fleet if isinstance(fleet, dict) else {}))
    return 0


def cmd_terminals(args: argparse.Namespace, client: Client) -> int:
    params = {"store": args.store, "state": args.state}
    now = _now()
    return _list(
        args, client, path_of("terminals"), params, lambda items: views.render_terminals(items, now)
    )


def cmd_terminal(args: argparse.Namespace, client: Client) -> int:
    terminal = client.get(path_of("terminals", args.terminal_id))
    if args.json:
        _json(terminal)
    else:
        print(views.render_terminal(terminal if isinstance(terminal, dict) else {}, _now()))
    return 0


def cmd_txns(args: argparse.Namespace, client: Client) -> int:
    params = {
        "terminal": args.terminal,
        "store": args.store,
        "acquirer": args.acquirer,
        "outcome": args.outcome,
        "cause": args.cause,
        "in_doubt": "true" if args.in_doubt else None,
        "failed": None if args.any_outcome or args.outcome else "true",
        "since": args.since,
        "until": args.until,
    }
    return _list(args, client, path_of("transactions"), params, views.render_txns)


def cmd_incidents(args: argparse.Namespace, client: Client) -> int:
    params = {
        "state": args.state or "open",
        "kind": args.kind,
        "cause": args.cause,
        "store": args.store,
        "acquirer": args.acquirer,
        "since": args.since,
        "until": args.until,
    }
    return _list(args, client, path_of("incidents"), params, views.incident_table)


def cmd_incident(args: argparse.Namespace, client: Client) -> int:
    incident = client.get(path_of("incidents", args.incident_id))
    if args.json:
        _json(incident)
    else:
        print(views.render_incident(incident if isinstance(incident, dict) else {}))
    return 0


def cmd_timeline(args: argparse.Namespace, client: Client) -> int:
    params = {"kind": args.kind, "since": args.since, "until": args.until}
    path = path_of("terminals", args.terminal_id, "timeline")
    return _list(args, client, path, params, views.render_timeline)


# --- entry ---------------------------------------------------------------------------------


def client_for(args: argparse.Namespace, environ: Mapping[str, str]) -> Client:
    """The client from the options, falling back on POSMON_URL/POSMON_TOKEN/POSMON_CAFILE."""
    return Client(
        getattr(args, "url", None) or environ.get("POSMON_URL", ""),
        getattr(args, "token", None) or environ.get("POSMON_TOKEN", ""),
        timeout=getattr(args, "timeout", DEFAULT_TIMEOUT_S),
        cafile=getattr(args, "cafile", None) or environ.get("POSMON_CAFILE") or None,
    )


def run(argv: list[str] | None, environ: Mapping[str, str] | None = None) -> int:
    """Parse ``argv`` and run the command; raises CliError for the user (exit code in it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    args.json = getattr(args, "json", False)
    client = client_for(args, os.environ if environ is None else environ)
    result: int = args.run(args, client)
    return result


__all__ = ["CliError", "build_parser", "run"]
