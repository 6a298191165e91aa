"""Benchmark data: a simulated fleet's day in a collector database, through the real ingest.

The fleet simulator's agents (:class:`collector.fleetsim.agents.TerminalSim`:
probe windows and flips of 9–10 probes every 60 s, host samples every 60 s,
device status changes and heartbeats, payments at 20–40 an hour, faults on a
schedule) record a day of ``stores`` × ``terminals``. Their reports are
encoded with the protocol's codec (as the agent's uplink does), decoded with
``protocol.fastwire.decode_report_rows`` and written by
``SqliteStorage.ingest`` (as the collector's ingest handler does) — no HTTP,
which would take hours for 24,000 terminal-hours. Reports go in in the order
of simulated time, one upload interval (30 s) of the whole fleet at a time,
so the ``events`` table looks like what a collector that heard the fleet live
would hold; a store whose WAN was down uploads its backlog late, as in life.
Simulation runs in ``--jobs`` worker processes (terminals split between
them); the main process decodes and ingests.

Then the correlator catches up: ``Correlator.one_pass`` (the real pass of the
running server, one write transaction per 2,000 events) until nothing is
pending. The simulated day ends when the build starts, so every payment is
within the correlator's ``revise_horizon_s`` (24 h) and the query API's
"last 24 h".

The day's faults (:func:`day_scenario`): every hour, each fault kind of the
simulator (ISP down, router down, weak Wi-Fi, DNS broken, acquirer path,
PIN pad unplugged, power cut, clock skewed, host starved) hits
``max(1, stores // 80)`` stores for 10–30 minutes, and every 3 hours an
acquirer outage hits ``max(3, stores // 25)`` stores at once.

    .venv/bin/python bench/fleetdata.py --db /tmp/fleet.db [--stores 250] [--terminals 4]
        [--hours 24] [--jobs 2] [--seed 1]

What was built is kept in ``<db>.meta.json`` (sizes, counts and timings);
``bench/attribution.py --reuse`` reads it instead of building again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from collector.fleetsim.agents import TerminalSim  # noqa: E402
from collector.fleetsim.plan import Plan, plan_faults  # noqa: E402
from collector.fleetsim.scenario import Scenario, parse_scenario  # noqa: E402
from protocol import encode_report  # noqa: E402

RUN_ID = "bench"
VERSION = "0.1.0+bench"
#: reports waiting between a worker and the ingesting process, in upload intervals
QUEUE_STEPS = 6
HOURLY_KINDS = (
    "isp_down",
    "router_down",
    "wifi_weak",
    "dns_broken",
    "acquirer_path",
    "pinpad_unplugged",
    "power_cut",
    "clock_skewed",
    "host_starved",
)


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def day_scenario(stores: int, terminals: int, hours: float, seed: int) -> Scenario:
    """The benchmark's scenario: ordinary payments and a steady rate of faults of every kind."""
    duration = int(hours * 3600)
    rng = random.Random(seed)
    per_kind = max(1, stores // 80)
    faults: list[dict[str, Any]] = []
    for hour in range(int(hours)):
        for kind in HOURLY_KINDS:
            length = rng.randrange(600, 1800, 60)
            at = hour * 3600 + rng.randrange(0, 3600 - 60, 60)
            if at + length > duration:
                continue
            fault: dict[str, Any] = {"kind": kind, "at": at, "duration": length}
            fault["stores"] = per_kind
            if kind == "acquirer_path":
                fault["acquirer"] = rng.choice(("acquirer-a", "acquirer-b"))
            if kind == "power_cut":
                fault["ups_runtime"] = rng.randrange(60, 300, 30)
            faults.append(fault)
        if hour % 3 == 1:
            at = hour * 3600 + rng.randrange(0, 3000, 60)
            if at + 900 <= duration:
                faults.append(
                    {
                        "kind": "acquirer_outage",
                        "acquirer": rng.choice(("acquirer-a", "acquirer-b")),
                        "stores": min(stores, max(3, stores // 25)),
                        "at": at,
                        "duration": 900,
                    }
                )
    data = {
        "name": "bench-day",
        "duration": duration,
        "stores": stores,
        "terminals": terminals,
        "acquirers": ["acquirer-a", "acquirer-b"],
        "payments_per_hour": [20, 40],
        "background_failures_per_hour": 0.1,
        "wifi_stores": stores // 6,
        "quiet_margin_s": 300,
        "fault": faults,
    }
    return parse_scenario(data, "bench-day")


def make_plan(stores: int, terminals: int, hours: float, seed: int, end: datetime) -> Plan:
    scenario = day_scenario(stores, terminals, hours, seed)
    start = end - timedelta(seconds=scenario.duration_s)
    return plan_faults(scenario, start=start, stores=stores, terminals=terminals, seed=seed)


# -- the simulating workers ---------------------------------------------------


def _worker(
    spec: dict[str, Any],
    part: int,
    parts: int,
    out: Any,  # multiprocessing queue
) -> None:
    end = datetime.fromisoformat(spec["end"])
    plan = make_plan(spec["stores"], spec["terminals"], spec["hours"], spec["seed"], end)
    mine = plan.all_terminals()[part::parts]
    sims = [
        TerminalSim(plan, store, terminal, run_id=RUN_ID, seed=spec["seed"], version=VERSION)
        for store, terminal in mine
    ]
    step = timedelta(seconds=plan.scenario.upload_interval_s)
    stop = plan.end + 3 * step  # drain the backlogs, as FleetSim.finish does
    now = plan.start
    while now < stop:
        now = min(now + step, stop)
        batch = []
        for sim in sims:
            sim.advance(now)
            for report in sim.take_reports():
                batch.append((sim.store, sim.terminal, encode_report(report)))
        out.put(batch)
    payments = [p for sim in sims for p in sim.payments]
    out.put(
        {
            "payments": len(payments),
            "failed": sum(p.failed for p in payments),
            "failed_by_fault": sum(p.failed and p.fault is not None for p in payments),
        }
    )


async def _ingest(db: Path, queues: list[Any], steps: int, hours: float) -> dict[str, Any]:
    from collector.storage.base import TokenInfo
    from collector.storage.sqlite import SqliteStorage
    from protocol.fastwire import decode_report_rows

    storage = SqliteStorage(str(db))
    await storage.open()
    loop = asyncio.get_running_loop()
    reports = events = stored = 0
    tokens: dict[str, TokenInfo] = {}
    started = time.perf_counter()
    every = max(1, steps // int(max(1, hours)))
    try:
        for n in range(steps):
            batch = []
            for q in queues:
                batch += await loop.run_in_executor(None, q.get)
            jobs = []
            for store, terminal, raw in batch:
                token = tokens.get(terminal)
                if token is None:
                    token = tokens[terminal] = TokenInfo("agent", terminal, store)
                wire = decode_report_rows(raw, max_events=5000)
                events += len(wire.events)
                jobs.append(storage.ingest(token, wire))
            acks = await asyncio.gather(*jobs)
            reports += len(acks)
            stored += sum(a.stored for a in acks)
            if (n + 1) % every == 0:
                elapsed = time.perf_counter() - started
                log(
                    f"ingested {n + 1}/{steps} upload intervals: {reports:,} reports, "
                    f"{events:,} events ({events / elapsed:,.0f} events/s)"
                )
        truth = [await loop.run_in_executor(None, q.get) for q in queues]
    finally:
        await storage.close()
    return {
        "reports": reports,
        "events": events,
        "stored": stored,
        "payments": sum(t["payments"] for t in truth),
        "failed_payments_simulated": sum(t["failed"] for t in truth),
        "failed_by_fault": sum(t["failed_by_fault"] for t in truth),
    }


def build(
    db: Path, *, stores: int, terminals: int, hours: float, seed: int, jobs: int
) -> dict[str, Any]:
    """Simulate and ingest the fleet's day into a new database ``db``."""
    if db.exists():
        raise SystemExit(f"{db} exists; remove it or use --reuse")
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    plan = make_plan(stores, terminals, hours, seed, end)
    spec = {"stores": stores, "terminals": terminals, "hours": hours, "seed": seed,
            "end": end.isoformat()}  # fmt: skip
    step = plan.scenario.upload_interval_s
    steps = len(range(0, int(plan.scenario.duration_s + 3 * step), step))
    log(
        f"building {db}: {stores} stores × {terminals} terminals × {hours:g} h "
        f"({plan.start:%Y-%m-%d %H:%M}Z to {plan.end:%H:%M}Z), {len(plan.faults)} faults, "
        f"{jobs} simulating process(es)"
    )
    ctx = mp.get_context("spawn")
    queues = [ctx.Queue(maxsize=QUEUE_STEPS) for _ in range(jobs)]
    procs = [
        ctx.Process(target=_worker, args=(spec, i, jobs, queues[i]), daemon=True)
        for i in range(jobs)
    ]
    started = time.perf_counter()
    for p in procs:
        p.start()
    try:
        counts = asyncio.run(_ingest(db, queues, steps, hours))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    seconds = time.perf_counter() - started
    faults: dict[str, int] = {}
    for f in plan.faults:
        faults[f.kind] = faults.get(f.kind, 0) + len(f.stores)
    return {
        "stores": stores,
        "terminals": terminals,
        "hours": hours,
        "seed": seed,
        "jobs": jobs,
        "start": plan.start.isoformat(),
        "end": plan.end.isoformat(),
        "faults": len(plan.faults),
        "store_faults_by_kind": faults,
        **counts,
        "generation_s": round(seconds, 1),
    }


# -- the correlator's catch-up ------------------------------------------------


async def _catch_up(db: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    from collector.correlate.service import Correlator
    from collector.settings import load_settings
    from collector.storage.sqlite import SqliteStorage

    settings = load_settings(config=None, overrides={"db": str(db)})
    storage = SqliteStorage(str(db))
    await storage.open()
    correlator = Correlator(storage, settings)
    events = passes = attributed = opened = 0
    started = last = time.perf_counter()
    try:
        while True:
            result = await correlator.one_pass()
            passes += 1
            events += result.events
            attributed += result.attributed
            opened += result.opened
            if time.perf_counter() - last > 60:
                last = time.perf_counter()
                progress(
                    f"correlator: {events:,} events in {last - started:,.0f} s "
                    f"({events / (last - started):,.0f}/s), {result.pending:,} events and "
                    f"{result.pending_payments:,} payments pending"
                )
            if result.events == 0 and result.pending == 0 and result.pending_payments == 0:
                break
    finally:
        await storage.close()
    seconds = time.perf_counter() - started
    return {
        "events": events,
        "passes": passes,
        "attributed": attributed,
        "incidents_opened": opened,
        "seconds": round(seconds, 1),
        "events_per_s": round(events / seconds, 1) if seconds else None,
        "max_pass_s": round(correlator.max_pass_s, 3),
    }


def catch_up(db: Path) -> dict[str, Any]:
    """Run the correlator's passes over everything not yet read; its figures."""
    return asyncio.run(_catch_up(db, log))


def db_figures(db: Path) -> dict[str, Any]:
    """Size and row counts of the built database."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        figures = {
            "db_bytes": sum(
                os.path.getsize(p) for p in (db, Path(f"{db}-wal")) if os.path.exists(p)
            ),
            "events_rows": one("SELECT count(*) FROM events"),
            "terminals_rows": one("SELECT count(*) FROM terminals"),
            "txns_rows": one("SELECT count(*) FROM txns"),
            "failed_txns": one("SELECT count(*) FROM txns WHERE failed = 1"),
            "incidents_rows": one("SELECT count(*) FROM incidents"),
            "by_kind": dict(conn.execute("SELECT kind, count(*) FROM events GROUP BY kind")),
            "failed_by_cause": dict(
                conn.execute(
                    "SELECT coalesce(cause, 'none'), count(*) FROM txns WHERE failed = 1 GROUP BY 1"
                )
            ),
        }
    finally:
        conn.close()
    return figures


def meta_path(db: Path) -> Path:
    return Path(f"{db}.meta.json")


def ensure(
    db: Path, *, reuse: bool, stores: int, terminals: int, hours: float, seed: int, jobs: int
) -> dict[str, Any]:
    """The database and its figures: built (and caught up) unless ``reuse`` and already there."""
    meta_file = meta_path(db)
    if reuse and db.exists() and meta_file.exists():
        meta: dict[str, Any] = json.loads(meta_file.read_text())
        log(f"reusing {db} (built {meta['build']['end']}, {meta['build']['events']:,} events)")
    else:
        if reuse and db.exists():
            raise SystemExit(
                f"--reuse: {db} exists but {meta_file} does not (an unfinished build?)"
            )
        meta = {"build": build(db, stores=stores, terminals=terminals, hours=hours, seed=seed,
                               jobs=jobs)}  # fmt: skip
        meta_file.write_text(json.dumps(meta, indent=2))
    if "correlator" not in meta:
        log("correlator: catching up with every stored event")
        meta["correlator"] = catch_up(db)
        meta["figures"] = db_figures(db)
        meta_file.write_text(json.dumps(meta, indent=2))
    return meta


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, required=True, help="database file to build or reuse")
    parser.add_argument("--reuse", action="store_true", help="use --db as built before")
    parser.add_argument("--stores", type=int, default=250)
    parser.add_argument("--terminals", type=int, default=4, help="per store")
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours, ending now")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="simulating processes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    meta = ensure(args.db, reuse=args.reuse, stores=args.stores, terminals=args.terminals,
                  hours=args.hours, seed=args.seed, jobs=args.jobs)  # fmt: skip
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
