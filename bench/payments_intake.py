"""Payments/s through the agent's local API, on one core, until the spool is the limit.

A real agent (``python -m agent run``, spool ``sync = "full"``) is pinned to
CPU 0; a client process pinned to CPU 1 posts payments — each one a start
and its end in one ``POST /v1/txn``, unique ids, realistic fields — over C
concurrent kept-alive connections and counts the 202s. Every answer is a
durable payment: the agent answers only after the SQLite commit (one fsync
per group of payments that arrived together).

Two agent set-ups: ``spool only`` (the collector unreachable, so the uplink
sleeps in its back-off and the spool keeps every event, which lets the
script count the transactions: one ``created_at`` per commit) and ``with
uplink`` (a real collector, pinned to CPU 1 with the client, takes the
events as they come, so the agent also reads, sends and deletes them).

Same-run baselines, each on CPU 0:
- ``spool, 1 payment per commit``: ``Spool.append_with`` of one payment's
  event and row per transaction, in one thread — intake without group commit.
- ``spool, 100 payments per commit``: the same, 100 per transaction — the
  spool's own ceiling.
- ``HTTP only``: a ``ThreadingHTTPServer`` built as the agent's API is
  (TCP_NODELAY, one write per answer) that reads each body and answers 202
  — the cost of the HTTP stack with no work behind it.

    .venv/bin/python bench/payments_intake.py [--payments 10000] [--repeat 5]
        [--concurrency 1,8,32]

Prints Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.agents import spool_state, wait_for, write_config  # noqa: E402
from tests.helpers import create_token, start_collector  # noqa: E402

AGENT_CPU, CLIENT_CPU = 0, 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(cpu: int) -> Callable[[], None]:
    return lambda: os.sched_setaffinity(0, {cpu})


def pin_process(pid: int, cpu: int) -> None:
    """Pin every thread of a running process (new threads inherit from their creator)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), {cpu})


def payment(run: str, i: int) -> dict[str, Any]:
    started = datetime(2026, 11, 21, 9, 0, tzinfo=UTC) + timedelta(seconds=i)
    ended = started + timedelta(milliseconds=800 + i % 1200)
    outcome = ("approved",) * 8 + ("declined", "error")
    out = outcome[i % 10]
    return {
        "txn_id": f"{run}-{i:07d}",
        "kind": "sale",
        "acquirer": ("acq-a", "acq-b")[i % 2],
        "amount_minor": 100 + i % 20_000,
        "currency": "EUR",
        "stan": f"{i % 999_999:06d}",
        "rrn": f"{i:012d}",
        "auth_code": "A12345" if out == "approved" else None,
        "response_code": {"approved": "00", "declined": "05", "error": "96"}[out],
        "started_at": started.isoformat().replace("+00:00", "Z"),
        "ended_at": ended.isoformat().replace("+00:00", "Z"),
        "outcome": out,
        "message": "host answered",
    }


# -- the client (a subprocess of its own) ------------------------------------------


def client_main(url: str, run: str, count: int, concurrency: int) -> None:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    bodies = [json.dumps(payment(run, i)).encode() for i in range(count)]
    statuses: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        mine: list[int] = []
        try:
            send(conn, k, mine)
        except Exception as err:
            errors.append(repr(err))
        conn.close()
        with lock:
            statuses.extend(mine)

    def send(conn: http.client.HTTPConnection, k: int, mine: list[int]) -> None:
        for i in range(k, count, concurrency):
            conn.request("POST", "/v1/txn", bodies[i], {"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = resp.read()
            mine.append(resp.status)
            if resp.status != 202 and len(errors) < 5:
                errors.append(f"{resp.status} {answer[:200]!r}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    print(json.dumps({"elapsed": elapsed, "ok": statuses.count(202), "n": len(statuses),
                      "errors": errors}))  # fmt: skip


def run_client(url: str, run: str, count: int, concurrency: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--client", url, run, str(count), str(concurrency)],
        capture_output=True, text=True, preexec_fn=pin(CLIENT_CPU), check=True, cwd=ROOT,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout)
    if result["ok"] != count:
        raise RuntimeError(f"only {result['ok']} of {count} answered 202: {result['errors']}")
    return result


# -- the agent under test ------------------------------------------------------------


def start_pinned_agent(config: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log = config.parent / f"agent-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=pin(AGENT_CPU),
        )  # fmt: skip
    try:
        wait_for(lambda: b"agent_started" in log.read_bytes(), what="agent_started", proc=proc)
    except BaseException:
        proc.kill()  # never leave an agent behind
        proc.wait(timeout=10)
        raise
    return proc, log


def agent_run(work: Path, url: str, token: str, count: int, concurrency: int) -> dict[str, Any]:
    config = write_config(
        work, url, token,
        host={"interval_s": 60.0}, uplink={"interval_s": 0.5, "batch_max_events": 500},
        spool={"path": "spool.db", "max_bytes": "1GiB", "sync": "full"},
        log={"level": "info", "format": "json"},
    )  # fmt: skip
    spool = work / "spool.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{spool}{suffix}").unlink(missing_ok=True)
    proc, _log = start_pinned_agent(config)
    try:
        api = spool_state(spool)["meta"]["api_url"]
        agent = psutil.Process(proc.pid)
        cpu0 = sum(agent.cpu_times()[:2])
        result = run_client(api, f"c{concurrency}", count, concurrency)
        cpu = sum(agent.cpu_times()[:2]) - cpu0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    db = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
    try:
        left, commits = db.execute(
            "SELECT count(*), count(DISTINCT created_at) FROM events WHERE kind = 'txn'"
        ).fetchone()
    finally:
        db.close()
    return {
        "rate": count / result["elapsed"],
        "cpu_us": cpu / count * 1e6,
        "per_commit": count / commits if left == count and commits else None,
    }


# -- baselines -----------------------------------------------------------------------


def spool_baseline(work: Path, count: int, per_commit: int) -> float:
    from agent.pan_guard import PanGuard
    from agent.payments.book import Book
    from agent.payments.fields import parse_submission
    from agent.payments.intake import _row
    from agent.spool import Spool

    path = work / f"baseline-{per_commit}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    spool = Spool(path, max_bytes=1 << 30, max_age_s=86400, sync="full")
    spool.open()
    book = Book(timeout_s=60, technical_codes=("91", "96"))
    guard = PanGuard()
    changes = []
    for i in range(count):  # built beforehand: only the spool's work is timed
        change = book.submit(parse_submission(payment("b", i), guard), time.time())
        book.apply(change)
        changes.append(change)
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {AGENT_CPU})
    try:
        t0 = time.perf_counter()
        for k in range(0, count, per_commit):
            group = changes[k : k + per_commit]
            spool.append_with(
                [e for c in group for e in c.events],
                payments=[_row(c.after) for c in group if c.after is not None],
                bump={"payments.count.approved": len(group)},
            )
        elapsed = time.perf_counter() - t0
    finally:
        os.sched_setaffinity(0, before)
        spool.close()
    return count / elapsed


def null_server_main() -> None:
    """An HTTP server that reads each body and answers 202, as the agent's API does."""
    from http import HTTPStatus
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().setup()

        def do_POST(self) -> None:
            json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = b'{"result": "ended"}'
            status = HTTPStatus.ACCEPTED
            self.wfile.write(
                f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n".encode()
                + data
            )

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128  # as the agent's

    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def http_baseline(count: int, concurrency: int) -> float:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--null-server"],
        stdout=subprocess.PIPE, text=True, preexec_fn=pin(AGENT_CPU),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        result = run_client(f"http://127.0.0.1:{port}", "h", count, concurrency)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    return count / float(result["elapsed"])


# -- main ------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--concurrency", default="1,8,32")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    if len(os.sched_getaffinity(0)) < 2:
        print("needs 2 CPUs (agent on one, client on the other)", file=sys.stderr)
        return 2
    rows: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="posmon-bench-") as tmp:
        work = Path(tmp)
        collector = start_collector(work / "collector.db")
        try:
            pin_process(collector.proc.pid, CLIENT_CPU)
            token = create_token(work / "collector.db", terminal="T-1", store="S-1")
            unreachable = f"http://127.0.0.1:{free_port()}"
            for r in range(args.repeat):
                for c in levels:
                    for name, url in (("spool only", unreachable), ("with uplink", collector.url)):
                        key = f"agent, {name}, {c} connections"
                        rows.setdefault(key, []).append(
                            agent_run(work, url, token, args.payments, c)
                        )
                for per_commit in (1, 100):
                    rows.setdefault(f"baseline: spool, {per_commit} per commit", []).append(
                        {"rate": spool_baseline(work, args.payments, per_commit)}
                    )
                c = max(levels)
                rows.setdefault(f"baseline: HTTP only, {c} connections", []).append(
                    {"rate": http_baseline(args.payments, c)}
                )
                print(f"round {r + 1} of {args.repeat} done", file=sys.stderr, flush=True)
        finally:
            collector.stop()
    print(f"\n{args.payments} payments per run, {args.repeat} runs each, interleaved\n")
    print("| what | payments/s (median) | agent CPU µs/payment | payments/commit | runs |")
    print("|---|---|---|---|---|")
    medians = {}
    for key, runs in rows.items():
        rate = statistics.median(x["rate"] for x in runs)
        medians[key] = rate
        cpu = [x["cpu_us"] for x in runs if x.get("cpu_us") is not None]
        batch = [x["per_commit"] for x in runs if x.get("per_commit") is not None]
        cpu_cell = f"{statistics.median(cpu):.0f}" if cpu else ""
        batch_cell = f"{statistics.median(batch):.1f}" if batch else ""
        all_runs = ", ".join(f"{x['rate']:,.0f}" for x in runs)
        print(f"| {key} | {rate:,.0f} | {cpu_cell} | {batch_cell} | {all_runs} |")
    c = max(levels)
    best = medians[f"agent, spool only, {c} connections"]
    print(f"\nratio agent ({c} connections, spool only) / HTTP only: "
          f"{best / medians[f'baseline: HTTP only, {c} connections']:.2f}")  # fmt: skip
    print(f"ratio agent ({c} connections, spool only) / spool 1 per commit: "
          f"{best / medians['baseline: spool, 1 per commit']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--null-server":
        null_server_main()
    else:
        sys.exit(main())
