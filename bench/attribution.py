"""Attribution throughput and query API latency on a fleet's day in SQLite (issue 6).

1. Data: ``bench/fleetdata.py`` builds ``--db`` (default 250 stores × 4
   terminals × 24 h of simulated agents, ingested through
   ``SqliteStorage.ingest``) and lets the correlator catch up, timing both;
   ``--reuse`` takes a database built before (its figures are in
   ``<db>.meta.json``).
2. Attribution throughput: ``collector.correlate.reattribute.reattribute``
   (what ``posmon-collector reattribute --since`` runs) over every failed
   payment of the day, ``--repeat`` times → failed payments/s.
3. Latency: the real collector (``python -m collector serve --db``) on
   127.0.0.1 with a viewer token. ``GET /api/v1/terminals/{id}`` for random
   terminals, ``--requests`` per round, one keep-alive client (stdlib
   ``http.client``) and then ``--clients`` concurrent clients (threads, one
   connection each); ``/api/v1/fleet``, ``/api/v1/transactions?failed=true``
   and ``/api/v1/terminals?limit=100`` with ``--other-requests`` each, one
   client. p50/p95/p99 per round; the medians over ``--repeat`` rounds.

Before the server starts, every terminal's ``last_seen`` is set to now, as if
the fleet were still reporting (the build and the correlator's catch-up take
longer than ``offline_after_s``, after which every terminal would be shown
offline).

    .venv/bin/python bench/attribution.py --db /tmp/fleet.db [--reuse] [--stores 250]
        [--terminals 4] [--hours 24] [--repeat 3] [--requests 2000] [--clients 4]

Results go to stdout as Markdown and to ``<db>.results.json``. Not part of
``make test``: the full size takes most of an hour on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import fleetdata  # noqa: E402
from bench.fleetdata import log  # noqa: E402
from protocol import format_datetime  # noqa: E402

TARGET_P95_MS = 50.0


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f}"


# -- attribution throughput ---------------------------------------------------


def measure_reattribute(db: Path, since: datetime, repeat: int) -> dict[str, Any]:
    from collector.correlate.reattribute import reattribute
    from collector.settings import load_settings

    settings = load_settings(config=None, overrides={"db": str(db)})
    runs = []
    for n in range(repeat):
        before = load()
        started = time.perf_counter()
        summary = asyncio.run(reattribute(settings, since, datetime.now(UTC), progress=False))
        seconds = time.perf_counter() - started
        runs.append({
            "payments": summary.payments, "changed": summary.changed, "seconds": seconds,
            "per_s": summary.payments / seconds, "load": f"{before} → {load()}",
            "by_cause": dict(summary.by_cause),
        })  # fmt: skip
        log(
            f"reattribute run {n + 1}: {summary.payments:,} failed payments in {seconds:.1f} s "
            f"({summary.payments / seconds:,.0f}/s), {summary.changed} changed cause, "
            f"load {runs[-1]['load']}"
        )
    return {"runs": runs, "median_per_s": statistics.median(r["per_s"] for r in runs)}


# -- latency --------------------------------------------------------------------


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99/max in ms of samples in seconds (nearest rank)."""
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]

    return {
        "n": len(ordered),
        "p50": rank(50) * 1000,
        "p95": rank(95) * 1000,
        "p99": rank(99) * 1000,
        "max": ordered[-1] * 1000,
    }


class Client:
    """One keep-alive HTTP/1.1 connection with a bearer token; times each GET."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=60
        )
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def get(self, path: str) -> tuple[float, bytes]:
        started = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise SystemExit(f"GET {path}: {response.status} {body[:300]!r}")
        return elapsed, body

    def close(self) -> None:
        self.conn.close()


def timed_gets(url: str, token: str, paths: list[str], clients: int) -> list[float]:
    """GET every path, spread over ``clients`` concurrent connections; the latencies."""
    out: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        client = Client(url, token)
        try:
            for path in paths[i::clients]:
                out[i].append(client.get(path)[0])
        except BaseException as err:  # reported below
            errors.append(err)
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [x for part in out for x in part]


def server_cpu(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def measure_latency(
    url: str, token: str, pid: int, paths: list[str], rounds: int, clients: int, label: str
) -> dict[str, Any]:
    results = []
    for n in range(rounds):
        before = load()
        cpu0, started = server_cpu(pid), time.perf_counter()
        samples = timed_gets(url, token, paths, clients)
        wall, cpu = time.perf_counter() - started, server_cpu(pid) - cpu0
        stats = percentiles(samples)
        stats |= {"rps": len(samples) / wall, "server_cpu_ms_per_req": cpu / len(samples) * 1000,
                  "load": f"{before} → {load()}"}  # fmt: skip
        results.append(stats)
        log(
            f"{label} round {n + 1}: n={stats['n']} p50 {stats['p50']:.1f} ms, "
            f"p95 {stats['p95']:.1f} ms, p99 {stats['p99']:.1f} ms, max {stats['max']:.1f} ms, "
            f"{stats['rps']:.0f} req/s, server CPU {stats['server_cpu_ms_per_req']:.1f} ms/req, "
            f"load {stats['load']}"
        )
    median = {k: statistics.median(r[k] for r in results)
              for k in ("p50", "p95", "p99", "max", "rps", "server_cpu_ms_per_req")}  # fmt: skip
    return {"rounds": results, "median": median}


def wait_idle(client: Client, timeout_s: float = 600.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        _, body = client.get("/api/v1/fleet")
        fleet: dict[str, Any] = json.loads(body)
        if fleet["correlator"]["idle"]:
            return fleet
        if time.monotonic() > deadline:
            raise SystemExit(
                f"the correlator is not idle after {timeout_s} s: {fleet['correlator']}"
            )
        time.sleep(1)


def latency_suite(db: Path, args: argparse.Namespace) -> dict[str, Any]:
    from tests.helpers import create_token, start_collector

    conn = sqlite3.connect(db)
    try:
        conn.execute("UPDATE terminals SET last_seen = ?", (format_datetime(datetime.now(UTC)),))
        conn.commit()
        terminals = [r[0] for r in conn.execute("SELECT terminal_id FROM terminals")]
    finally:
        conn.close()
    token = create_token(db, viewer="bench-attribution")
    collector = start_collector(db)
    out: dict[str, Any] = {}
    try:
        pid = collector.proc.pid
        client = Client(collector.url, token)
        fleet = wait_idle(client)
        client.close()
        out["fleet_summary"] = {k: fleet[k] for k in ("terminals", "failed_payments", "in_doubt",
                                                      "open_incidents")}  # fmt: skip
        rng = random.Random(args.seed)
        paths = [f"/api/v1/terminals/{rng.choice(terminals)}" for _ in range(args.requests)]
        for path in paths[:20]:  # warm-up: the page cache and the reader pool's connections
            timed_gets(collector.url, token, [path], 1)
        out["terminal_1"] = measure_latency(
            collector.url, token, pid, paths, args.repeat, 1, "GET /terminals/{id}, 1 client"
        )
        out[f"terminal_{args.clients}"] = measure_latency(
            collector.url, token, pid, paths, args.repeat, args.clients,
            f"GET /terminals/{{id}}, {args.clients} clients",
        )  # fmt: skip
        since = format_datetime(datetime.now(UTC) - timedelta(hours=24))
        others = {
            "fleet": "/api/v1/fleet",
            "transactions_failed": "/api/v1/transactions?failed=true",
            "terminals_100": "/api/v1/terminals?limit=100",
            "transactions_failed_since": f"/api/v1/transactions?failed=true&since={since}",
        }
        for name, path in others.items():
            timed_gets(collector.url, token, [path] * 3, 1)  # warm-up
            out[name] = measure_latency(
                collector.url, token, pid, [path] * args.other_requests, args.repeat, 1,
                f"GET {path}",
            )  # fmt: skip
    finally:
        collector.stop()
    return out


# -- report ---------------------------------------------------------------------


def describe_machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=False).stdout.strip()  # fmt: skip
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
    }


def _counts(mapping: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(mapping.items()))


ENDPOINTS = (
    ("terminal_1", "/api/v1/terminals/{id}", 1),
    ("terminal_n", "/api/v1/terminals/{id}", 0),
    ("fleet", "/api/v1/fleet", 1),
    ("transactions_failed", "/api/v1/transactions?failed=true", 1),
    ("transactions_failed_since", "/api/v1/transactions?failed=true&since=(24 h ago)", 1),
    ("terminals_100", "/api/v1/terminals?limit=100", 1),
)


def markdown(meta: dict[str, Any], results: dict[str, Any]) -> str:
    b, c, f = meta["build"], meta["correlator"], meta["figures"]
    lines = [
        f"Data: {b['stores']} stores × {b['terminals']} terminals × {b['hours']:g} h: "
        f"{f['events_rows']:,} events ({_counts(f['by_kind'])}); {f['txns_rows']:,} payments, "
        f"{f['failed_txns']:,} failed; {f['incidents_rows']:,} incidents; "
        f"database {f['db_bytes'] / 2**30:.2f} GiB.",
        f"Generation and ingest: {b['generation_s']:,.0f} s "
        f"({b['events'] / b['generation_s']:,.0f} events/s, {b['jobs']} simulating processes).",
        f"Correlator catch-up: {c['events']:,} events in {c['seconds']:,.0f} s = "
        f"**{c['events_per_s']:,.0f} events/s** ({c['passes']:,} passes).",
        f"Failed payments by cause: {_counts(f['failed_by_cause'])}.",
        "",
    ]
    r = results.get("reattribute")
    if r:
        runs = ", ".join(f"{x['per_s']:,.0f}" for x in r["runs"])
        seconds = ", ".join(f"{x['seconds']:,.1f}" for x in r["runs"])
        lines += [
            "| what | median | runs |",
            "|---|---|---|",
            f"| reattribute {r['runs'][0]['payments']:,} failed payments (payments/s) "
            f"| **{r['median_per_s']:,.0f}** | {runs} (seconds: {seconds}) |",
            "",
        ]
    lines += [
        "| endpoint | clients | n/round | p50 ms | p95 ms | p99 ms | max ms | req/s "
        "| server CPU ms/req | p95 of each round |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    n_clients = results.get("clients", 4)
    for key, label, clients in ENDPOINTS:
        m = results.get(key if key != "terminal_n" else f"terminal_{n_clients}")
        if not m:
            continue
        med, rounds = m["median"], m["rounds"]
        per = ", ".join(f"{x['p95']:.1f}" for x in rounds)
        lines.append(
            f"| {label} | {clients or n_clients} | {rounds[0]['n']} | {med['p50']:.1f} "
            f"| {med['p95']:.1f} | {med['p99']:.1f} | {med['max']:.1f} | {med['rps']:.0f} "
            f"| {med['server_cpu_ms_per_req']:.1f} | {per} |"
        )
    for key, who in (
        ("terminal_1", "one client"),
        (f"terminal_{n_clients}", f"{n_clients} clients"),
    ):
        m = results.get(key)
        if m:
            ratio = m["median"]["p95"] / TARGET_P95_MS
            lines.append(
                f"\nterminal view p95 / target ({TARGET_P95_MS:.0f} ms), {who}: **{ratio:.2f}**"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    fleetdata.add_arguments(parser)
    parser.add_argument("--repeat", type=int, default=3, help="runs / rounds per measurement")
    parser.add_argument(
        "--requests", type=int, default=2000, help="GETs of /terminals/{id} per round"
    )
    parser.add_argument(
        "--clients", type=int, default=4, help="concurrent clients in the second run"
    )
    parser.add_argument("--other-requests", type=int, default=50,
                        help="GETs per round of each other endpoint")  # fmt: skip
    parser.add_argument("--skip-reattribute", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    meta = fleetdata.ensure(args.db, reuse=args.reuse, stores=args.stores, terminals=args.terminals,
                            hours=args.hours, seed=args.seed, jobs=args.jobs)  # fmt: skip
    results: dict[str, Any] = {"machine": describe_machine(), "clients": args.clients,
                               "command": " ".join([".venv/bin/python", *sys.argv])}  # fmt: skip
    if not args.skip_reattribute:
        since = datetime.fromisoformat(meta["build"]["start"]) - timedelta(minutes=5)
        results["reattribute"] = measure_reattribute(args.db, since, args.repeat)
    if not args.skip_latency:
        results |= latency_suite(args.db, args)
    Path(f"{args.db}.results.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2)
    )
    print(markdown(meta, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
