"""Collector ingest on SQLite: events/s against the raw executemany baseline.

One collector process (``python -m collector serve``) on 127.0.0.1; a
separate load process posts realistic reports (100 events each: probe
windows, host samples, device states, payments; gzip; one agent token per
terminal) over several concurrent keep-alive connections. In the same run,
the baseline inserts the same rows into a fresh database with the same
schema, indexes and pragmas (WAL, synchronous=FULL) by ``executemany`` in
one process, committing once per 100 rows (one report's worth). Each side
runs ``--repeat`` times, interleaved; medians are reported.

    .venv/bin/python bench/ingest.py [--reports 2000] [--concurrency 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocol import (  # noqa: E402
    AgentInfo,
    DeviceStatus,
    Event,
    HostSample,
    ProbeWindow,
    Txn,
    encode_event,
    encode_report_raw,
    gzip_body,
)

EVENTS_PER_REPORT = 100


def realistic_events(terminal: int, first_seq: int, count: int) -> list[Event]:
    """A report's worth of what a store's agent sends: mostly probe windows."""
    base = datetime(2026, 11, 21, 9, 0, tzinfo=UTC) + timedelta(seconds=first_seq)
    out: list[Event] = []
    for i in range(count):
        seq, ts = first_seq + i, base + timedelta(milliseconds=10 * i)
        r = seq % 20
        if r < 12:
            out.append(ProbeWindow(
                seq=seq, ts=ts, probe="icmp", target=f"10.{terminal}.0.1", role="gateway",
                window_s=60.0, sent=60, ok=59, loss_pct=1.67, rtt_min_ms=0.4, rtt_avg_ms=0.9,
                rtt_p95_ms=1.8, rtt_max_ms=3.1, jitter_ms=0.2, errors={"timeout": 1},
            ))  # fmt: skip
        elif r < 15:
            out.append(HostSample(
                seq=seq, ts=ts, cpu_pct=12.5, mem_pct=41.0, mem_available_bytes=2_000_000_000,
                disk_pct=63.0, disk_free_bytes=20_000_000_000, load1=0.3, load5=0.2,
                load15=0.1, uptime_s=86_400.0, boot_time=base - timedelta(days=1),
            ))  # fmt: skip
        elif r < 18:
            out.append(DeviceStatus(
                seq=seq, ts=ts, device="receipt-printer", device_kind="escpos_printer",
                state="warning", flags=("paper_near_end",), attributes={"model": "TM-T20"},
                heartbeat=r == 16,
            ))  # fmt: skip
        else:
            out.append(Txn(
                seq=seq, ts=ts, txn_id=f"POS-{terminal}-{seq}", acquirer="acme", outcome="timeout",
                response_code=None, started_at=ts - timedelta(seconds=60), amount_minor=1299,
                currency="EUR", in_doubt=True, stan=f"{seq % 999_999:06d}",
            ))  # fmt: skip
    return out


# -- the load process ---------------------------------------------------------


async def _post_all(url: str, bodies: list[tuple[str, bytes]], concurrency: int) -> int:
    import aiohttp

    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    acked = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal acked
        while not queue.empty():
            token, body = queue.get_nowait()
            headers = {"Authorization": f"Bearer {token}", "Content-Encoding": "gzip",
                       "Content-Type": "application/json"}  # fmt: skip
            async with session.post(url + "/api/v1/reports", data=body, headers=headers) as resp:
                payload = await resp.read()
                if resp.status != 200:
                    raise SystemExit(f"collector answered {resp.status}: {payload[:300]!r}")
                acked += len(json.loads(payload)["acked"])

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return acked


def load_main(url: str, tokens_file: str, reports: int, concurrency: int) -> None:
    tokens = json.loads(Path(tokens_file).read_text())
    bodies = []
    for n in range(reports):
        terminal = n % len(tokens)
        first_seq = (n // len(tokens)) * EVENTS_PER_REPORT + 1
        events = realistic_events(terminal, first_seq, EVENTS_PER_REPORT)
        agent = AgentInfo(id=f"agent-{terminal}", terminal_id=f"T-{terminal}",
                          store_id=f"S-{terminal}", version="bench")  # fmt: skip
        raw = encode_report_raw(agent, datetime.now(UTC), (encode_event(e) for e in events))
        bodies.append((tokens[terminal], gzip_body(raw)))
    start = time.perf_counter()
    acked = asyncio.run(_post_all(url, bodies, concurrency))
    elapsed = time.perf_counter() - start
    print(json.dumps({"events": acked, "seconds": elapsed}))


# -- the two measurements -----------------------------------------------------


def measure_collector(work: Path, run: int, reports: int, concurrency: int) -> float:
    from tests.helpers import create_token, start_collector

    db = work / f"collector-{run}.db"
    collector = start_collector(db)
    try:
        tokens = [create_token(db, terminal=f"T-{t}", store=f"S-{t}") for t in range(concurrency)]
        tokens_file = work / "tokens.json"
        tokens_file.write_text(json.dumps(tokens))
        out = subprocess.run(
            [sys.executable, __file__, "--load", collector.url, str(tokens_file),
             str(reports), str(concurrency)],
            check=True, capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
    finally:
        collector.stop()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["events"] == reports * EVENTS_PER_REPORT, result
    return float(result["events"] / result["seconds"])


def measure_baseline(work: Path, run: int, reports: int, concurrency: int) -> float:
    from collector.storage.sqlite_schema import migrate
    from collector.storage.sqlite_writer import connect

    batches = []
    received = datetime.now(UTC).isoformat()
    for n in range(reports):
        terminal = n % concurrency
        first_seq = (n // concurrency) * EVENTS_PER_REPORT + 1
        rows = []
        for e in realistic_events(terminal, first_seq, EVENTS_PER_REPORT):
            body = encode_event(e).decode()
            rows.append((f"agent-{terminal}", e.seq, f"T-{terminal}", f"S-{terminal}",
                         e.kind, json.loads(body)["ts"], received, body))  # fmt: skip
        batches.append(rows)
    conn = connect(str(work / f"baseline-{run}.db"))
    migrate(conn)
    sql = (
        "INSERT INTO events (agent_id, seq, terminal_id, store_id, kind, ts, received_at, body) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
    )
    start = time.perf_counter()
    for rows in batches:
        conn.execute("BEGIN")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return reports * EVENTS_PER_REPORT / elapsed


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        load_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ingest, baseline = [], []
    with tempfile.TemporaryDirectory(prefix="posmon-bench-") as tmp:
        work = Path(tmp)
        for run in range(args.repeat):
            ingest.append(measure_collector(work, run, args.reports, args.concurrency))
            baseline.append(measure_baseline(work, run, args.reports, args.concurrency))
            print(f"run {run + 1}: collector {ingest[-1]:,.0f} events/s, "
                  f"baseline {baseline[-1]:,.0f} rows/s", flush=True)  # fmt: skip
    med_i, med_b = statistics.median(ingest), statistics.median(baseline)
    ratios = [i / b for i, b in zip(ingest, baseline, strict=True)]
    runs_i = ", ".join(f"{x:,.0f}" for x in ingest)
    runs_b = ", ".join(f"{x:,.0f}" for x in baseline)
    print()
    print(f"| what | events/s (median of {args.repeat}) | runs |")
    print("|---|---|---|")
    print(f"| collector ingest, {args.concurrency} connections, {EVENTS_PER_REPORT} events/report "
          f"| {med_i:,.0f} | {runs_i} |")  # fmt: skip
    print(f"| baseline executemany, {EVENTS_PER_REPORT} rows/commit | {med_b:,.0f} | {runs_b} |")
    print(
        f"| ratio of medians (target ≥ 0.5) | **{med_i / med_b:.2f}** | per run: "
        f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f}) |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
