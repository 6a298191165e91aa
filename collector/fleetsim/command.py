"""``posmon-collector simulate-fleet``: a simulated fleet posting to a real collector.

    posmon-collector simulate-fleet --url URL (--db PATH | --config FILE)
        --scenario FILE|NAME [--stores N] [--terminals M] [--seed S]
        [--start ISO] [--truth OUT.jsonl] [--score] [--quiet]

Exit status: 0 done; 1 the collector or its database failed (refused a
report, unreachable, the API could not be read for --score); 2 bad usage or a
bad scenario (the message names the flag, or the file and key).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from agent.logs import configure_logging

from ..command import EXIT_FAILED, EXIT_USAGE, CommandError
from ..settings import load_settings
from ..storage import StorageError
from .generate import FleetSim, Progress
from .plan import plan_faults
from .post import PostError, create_tokens
from .scenario import SCENARIO_DIR, ScenarioError, find_scenario, load_scenario
from .score import ScoreError, fetch_failed, format_score, score, wait_idle
from .truth import write_truth

#: The default start leaves this much room so that everything, backlogs included, is in the past.
START_SLACK = timedelta(minutes=5)

DESCRIPTION = f"""\
Simulate a fleet of stores and terminals and post what their agents would
record — probe windows and flips, device status, host samples, payments and
agent starts — through the collector's real ingest API, with faults injected
on the scenario's schedule (ISP down, router down, weak Wi-Fi, DNS broken,
acquirer outage or path trouble, PIN pad unplugged, power cut, clock skewed,
host starved). Simulated time runs as fast as the collector takes reports.

An agent token per terminal (and, with --score, a viewer token) is created
in the collector's database (--db, or the [server] db of --config), as
'token create' does; the collector may be running. Terminals are named
S001-T1, S001-T2, …; each run's agents and payments carry a fresh run id,
so runs never collide.

--scenario takes a file or the name of a shipped example
({", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.toml")))}).
--truth writes one JSON line per failed payment with the cause it should
get. --score waits until the collector's correlator is idle, reads
GET /api/v1/transactions?failed=true and prints, per cause, how many the
collector named right and what it called the others.
"""


def add_parser(commands: Any) -> None:
    """Add ``simulate-fleet`` to ``commands`` (it sets ``run``)."""
    parser = commands.add_parser(
        "simulate-fleet",
        help="post a simulated fleet's reports, with faults, to a collector",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url", required=True, help="the collector's base URL, e.g. http://127.0.0.1:8780"
    )
    parser.add_argument(
        "--db", metavar="PATH", help="the collector's SQLite database (for the tokens)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the collector's TOML settings (its [server] db)",
    )
    parser.add_argument(
        "--scenario",
        required=True,
        metavar="FILE",
        help="scenario TOML file, or a shipped name like 'mixed'",
    )
    parser.add_argument(
        "--stores", type=_positive("--stores"), metavar="N", help="stores (default: the scenario's)"
    )
    parser.add_argument(
        "--terminals",
        type=_positive("--terminals"),
        metavar="M",
        help="terminals per store (default: the scenario's)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        metavar="S",
        help="random seed (default 1): same seed, same fleet",
    )
    parser.add_argument(
        "--start", type=_start, metavar="ISO",
        help="simulated start, ISO 8601 (default: now minus the scenario's duration and 5 minutes)",
    )  # fmt: skip
    parser.add_argument(
        "--truth", type=Path, metavar="OUT", help="write the ground truth here (JSON lines)"
    )
    parser.add_argument(
        "--score",
        action="store_true",
        help="after posting, compare the collector's causes with the truth",
    )
    parser.add_argument(
        "--score-timeout", type=float, default=300.0, metavar="S",
        help="--score: wait at most this long for the correlator to be idle (default 300)",
    )  # fmt: skip
    parser.add_argument("--no-gzip", action="store_true", help="post reports uncompressed")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(run=run)


def _positive(flag: str) -> Any:
    def check(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if not 1 <= number <= 10_000:
            raise argparse.ArgumentTypeError(f"{number} is out of range; allowed 1..10000")
        return number

    check.__name__ = flag
    return check


def _start(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 time like 2026-03-01T09:00:00Z"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _db(args: argparse.Namespace) -> str:
    if args.db is None and args.config is None:
        raise CommandError(
            "simulate-fleet: --db or --config is needed (to create the agent tokens)", EXIT_USAGE
        )
    settings = load_settings(config=args.config, overrides={"db": args.db})
    return settings.db


def _print_progress(progress: Progress) -> None:
    print(
        f"simulate-fleet: {progress.now:%Y-%m-%d %H:%M}Z of {progress.end:%H:%M}Z · "
        f"{progress.reports} reports ({progress.events} events) posted · "
        f"{progress.payments} payments, {progress.failed} failed",
        file=sys.stderr,
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    configure_logging("warning")  # stdout is for the summary and the score
    if not args.url.startswith(("http://", "https://")):
        raise CommandError(f"--url: {args.url!r} is not an http:// or https:// URL", EXIT_USAGE)
    db = _db(args)
    try:
        scenario = load_scenario(find_scenario(args.scenario))
    except ScenarioError as err:
        raise CommandError(str(err), EXIT_USAGE) from None
    start = args.start
    if start is None:
        start = datetime.now(UTC) - timedelta(seconds=scenario.duration_s) - START_SLACK
    try:
        plan = plan_faults(
            scenario, start=start, stores=args.stores, terminals=args.terminals,
            seed=args.seed, where=str(args.scenario),
        )  # fmt: skip
    except ScenarioError as err:
        raise CommandError(str(err), EXIT_USAGE) from None
    return asyncio.run(_simulate(args, plan, db))


async def _simulate(args: argparse.Namespace, plan: Any, db: str) -> int:
    try:
        tokens, viewer = await create_tokens(
            db, plan.all_terminals(), viewer="simulate-fleet" if args.score else None
        )
    except StorageError as err:
        raise CommandError(f"cannot create tokens in the database {db}: {err}") from None
    except ValueError as err:
        raise CommandError(f"cannot create tokens: {err}", EXIT_USAGE) from None
    sim = FleetSim(
        plan, url=args.url, tokens=tokens, seed=args.seed, gzip=not args.no_gzip,
        progress=None if args.quiet else _print_progress,
    )  # fmt: skip
    if not args.quiet:
        print(
            f"simulate-fleet: run {sim.run_id}: scenario {plan.scenario.name!r}, "
            f"{len(plan.stores)} stores × {len(plan.terminals[plan.stores[0]])} terminals, "
            f"{plan.start:%Y-%m-%d %H:%M}Z to {plan.end:%H:%M}Z, {len(plan.faults)} faults",
            file=sys.stderr,
        )
    try:
        async with sim:
            await sim.finish()
    except PostError as err:
        raise CommandError(f"simulate-fleet: {err}", EXIT_FAILED) from None
    rows = sim.truth()
    if args.truth is not None:
        try:
            write_truth(args.truth, rows)
        except OSError as err:
            raise CommandError(
                f"--truth: cannot write {args.truth}: {err.strerror or err}"
            ) from None
    counts = Counter(str(r.expected_cause) for r in rows)
    by_cause = ", ".join(f"{cause} {n}" for cause, n in sorted(counts.items())) or "none"
    c = sim.counters
    print(
        f"run {sim.run_id}: posted {c.reports} reports ({c.events} events, {c.duplicates} "
        f"duplicates) for {len(sim.terminals)} terminals; {len(rows)} failed payments "
        f"({by_cause})"
    )
    if args.score:
        assert viewer is not None
        print(await _score(args, sim, viewer, rows))
    return 0


async def _score(args: argparse.Namespace, sim: FleetSim, viewer: str, rows: Any) -> str:
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await wait_idle(session, args.url, viewer, timeout_s=args.score_timeout)
            items = await fetch_failed(
                session, args.url, viewer, since=sim.plan.start - timedelta(hours=1)
            )
    except ScoreError as err:
        raise CommandError(f"--score: {err}") from None
    return format_score(score(rows, items, run_id=sim.run_id))
