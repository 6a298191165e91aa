"""Log tailing: lines/s through the tailer with the PAN guard on, on one core.

The log is the POS mix of ``bench/pan_guard.py`` (ECR, PIN pad, host, printer,
scanner and JSON lines; 1 % of them carry a card number from
``tests/agent/pan_corpus``) with payment lines mixed in (``--payments``, 2 %
by default: a start and an end line per payment) that the ``[[logfile]]``
rules below turn into reports. The file is written once to a temporary
directory (so reads come from the page cache) and read from its start.

Measured, each ``--repeat`` times, interleaved; medians are reported:

- ``tailer``: the whole tailer path — :class:`agent.logtail.source.Follower`
  reads and splits, each line decoded, through ``GUARD.scrub``, matched
  against the rules, the file position encoded for every report — handing
  the reports to a store that keeps nothing (CPU time, ``time.process_time``;
  the process is pinned to one CPU);
- baselines on the same file in the same run: ``read+decode`` (the follower's
  reads, the split and the decode only: the floor of any tailer) and
  ``scrub`` (the guard alone on the decoded lines);
- ``--with-spool``: the tailer on the real intake (:class:`Payments` on a
  spool file with ``sync = "full"``), wall-clock: one SQLite transaction per
  payment line, which is what bounds it.

    .venv/bin/python bench/logtail.py [--lines 200000] [--repeat 7] [--with-spool]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.config import load_config  # noqa: E402
from agent.logtail.runner import LogTails  # noqa: E402
from agent.logtail.settings import LogFileSpec  # noqa: E402
from agent.logtail.source import Follower  # noqa: E402
from agent.logtail.tailer import LogTail, decode  # noqa: E402
from agent.pan_guard import GUARD  # noqa: E402
from agent.payments import Payments  # noqa: E402
from agent.payments.settings import PaymentsSettings  # noqa: E402
from agent.spool import Spool  # noqa: E402


def _load_pan_bench() -> Any:
    spec = importlib.util.spec_from_file_location(
        "pan_guard_bench", ROOT / "bench" / "pan_guard.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RULES = r"""
[[logfile.rule]]
pattern = '^(?P<started_at>\S+ \S+) INFO  \[pay\] START txn=(?P<txn_id>\S+) amount=(?P<amount_minor>\d+) cur=(?P<currency>[A-Z]{3})'
time_format = "%Y-%m-%d %H:%M:%S.%f"
timezone = "Europe/Berlin"
set = { kind = "sale", acquirer = "acq-a" }

[[logfile.rule]]
pattern = '^(?P<ended_at>\S+ \S+) INFO  \[pay\] END txn=(?P<txn_id>\S+) result=(?P<outcome>[A-Z]+) rc=(?P<response_code>\d\d)'
time_format = "%Y-%m-%d %H:%M:%S.%f"
timezone = "Europe/Berlin"
outcome_map = { OK = "approved", DECL = "declined" }
"""  # noqa: E501 (a log rule is one long regex)


def write_log(path: Path, n: int, payment_share: float, seed: int = 5) -> tuple[int, int]:
    """The mix, with payment start/end pairs; returns (lines, payment lines)."""
    pan_bench = _load_pan_bench()
    lines: list[bytes] = pan_bench.pos_log(n, 0.01, seed)
    rng = random.Random(seed)
    payments = int(n * payment_share / 2)
    slots = sorted(rng.sample(range(n - 1), payments * 2))
    out = list(lines)
    for k in range(payments):
        hh, mm, ss = rng.randint(7, 21), rng.randint(0, 59), rng.randint(0, 59)
        ts = f"2026-11-21 {hh:02d}:{mm:02d}:{ss:02d}"
        out[slots[2 * k]] = (
            f"{ts}.{rng.randint(0, 999):03d} INFO  [pay] START txn=POS-{k:07d} "
            f"amount={rng.randint(50, 50000)} cur=EUR"
        ).encode()
        word, rc = rng.choice([("OK", "00")] * 9 + [("DECL", "05")])
        out[slots[2 * k + 1]] = (
            f"{ts}.999 INFO  [pay] END txn=POS-{k:07d} result={word} rc={rc}"
        ).encode()
    path.write_bytes(b"\n".join(out) + b"\n")
    return len(out), payments * 2


def load_spec(directory: Path, log: Path) -> LogFileSpec:
    config = directory / "agent.toml"
    config.write_text(
        '[agent]\nterminal_id = "T"\nstore_id = "S"\n[collector]\nurl = "http://127.0.0.1:9"\n'
        f'token = "t"\n[spool]\npath = "spool.db"\n[[logfile]]\npath = "{log}"\n'
        f'start_at = "beginning"\n{RULES}'
    )
    (spec,) = load_config(config).logfiles
    return spec


class NullStore:
    """Takes every report and keeps nothing: the tailer's own cost."""

    def __init__(self) -> None:
        self.reports = 0

    async def submit(
        self, data: Mapping[str, object], *, source: str, checkpoint: Mapping[str, str]
    ) -> str:
        self.reports += 1
        return "ended" if "outcome" in data else "started"

    async def load_checkpoint(self, key: str) -> str | None:
        return None

    async def save_checkpoint(self, values: Mapping[str, str]) -> None:
        return None


async def tail_all(tail: LogTail) -> None:
    stop = asyncio.Event()
    assert await tail.start(stop)
    assert await tail.step(stop)
    tail.close()


def _cpu(fn: Callable[[], None]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(spec: LogFileSpec, lines: int, matched: int, repeat: int) -> dict[str, list[float]]:
    texts = [decode(raw, "utf-8")[0] for raw in spec.path.read_bytes().split(b"\n")[:-1]]

    def tailer() -> None:
        store = NullStore()
        tail = LogTail(spec, store, GUARD)
        asyncio.run(tail_all(tail))
        assert tail.lines == lines and store.reports == matched, (tail.lines, store.reports)

    def read_decode() -> None:
        follower = Follower(spec.path, start_at="beginning", position=None)
        n = 0
        while (chunk := follower.read()) is not None:
            for raw in chunk.data.split(b"\n")[:-1]:
                decode(raw, "utf-8")
                n += 1
        follower.close()
        assert n == lines

    def scrub() -> None:
        for text in texts:
            GUARD.scrub(text)

    runs: dict[str, list[float]] = {"tailer": [], "read+decode": [], "scrub": []}
    for _ in range(repeat):
        for name, fn in (("tailer", tailer), ("read+decode", read_decode), ("scrub", scrub)):
            runs[name].append(lines / _cpu(fn))
    return runs


async def with_spool(spec: LogFileSpec, directory: Path, lines: int, matched: int) -> float:
    """Wall-clock lines/s of the tailer on the real intake and a real spool file."""
    spool = Spool(directory / f"spool-{time.monotonic_ns()}.db", max_bytes=1 << 34,
                  max_age_s=86400, sync="full")  # fmt: skip
    executor = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()

    async def call(fn: Callable[[Spool], Any]) -> Any:
        return await loop.run_in_executor(executor, fn, spool)

    await call(lambda s: s.open())
    payments = Payments(PaymentsSettings(timeout_s=86400), call)
    await payments.load()
    tails = LogTails([spec], payments, call)
    (tail,) = tails.tails
    start = time.perf_counter()
    await tail_all(tail)
    elapsed = time.perf_counter() - start
    await payments.close()
    await call(lambda s: s.close())
    executor.shutdown()
    assert tail.lines == lines and sum(tail.results.values()) == matched, tail.status_json()
    return lines / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--payments", type=float, default=0.02, help="share of payment lines")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--with-spool", action="store_true")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    with tempfile.TemporaryDirectory(dir=ROOT.parent) as tmp:
        directory = Path(tmp)
        log = directory / "pos.log"
        lines, matched = write_log(log, args.lines, args.payments)
        spec = load_spec(directory, log)
        print(f"{lines} lines ({log.stat().st_size / 1e6:.1f} MB), {matched} payment lines, "
              f"1 % card-bearing; medians of {args.repeat}, CPU time, one CPU")  # fmt: skip
        runs = measure(spec, lines, matched, args.repeat)
        medians = {name: statistics.median(values) for name, values in runs.items()}
        for name, values in runs.items():
            listed = ", ".join(f"{v:,.0f}" for v in values)
            print(f"  {name:<12} {medians[name]:>12,.0f} lines/s   ({listed})")
        print(f"  tailer / target 50,000: {medians['tailer'] / 50_000:.2f}")
        print(f"  read+decode / tailer: {medians['read+decode'] / medians['tailer']:.1f}")
        print(f"  scrub share of the tailer's time: {medians['tailer'] / medians['scrub']:.2f}")
        if args.with_spool:
            walls = [asyncio.run(with_spool(spec, directory, lines, matched)) for _ in range(3)]
            wall = statistics.median(walls)
            listed = ", ".join(f"{v:,.0f}" for v in walls)
            print(f"  with the spool (sync=full, wall clock, median of 3): {wall:,.0f} lines/s "
                  f"= {wall * matched / lines:,.0f} payment lines/s ({listed})")  # fmt: skip


if __name__ == "__main__":
    main()
