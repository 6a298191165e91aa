"""The PAN guard on the log-tailing path: lines/s through ``scrub()`` on one core.

A realistic POS log mix (ECR, PIN pad, host, printer, scanner and JSON
application lines; barcodes, AIDs, RRNs and timestamps that reach the slow
path; 1 % of the lines carry a card number from ``tests/agent/pan_corpus``)
goes through ``agent.pan_guard.GUARD.scrub`` one line at a time, the way the
log tailer calls it. Same-run baselines, on the same lines:

- ``decode``: ``bytes.decode("utf-8", "replace")`` per line, the least a tailer
  does to a line anyway;
- ``rule``: one typical ``[[logfile]]`` rule (a regex with named groups)
  matched against each line, the other work the tailer does per line;
- ``prefilter``: only the guard's first regex search, what an ordinary line
  costs at best.

The process is pinned to one CPU. Each measurement runs ``--repeat`` times,
interleaved; medians are reported. ``--false-positives`` also measures how
often digit runs that are not card numbers get masked.

    .venv/bin/python bench/pan_guard.py [--lines 200000] [--repeat 7] [--false-positives]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent import pan_guard  # noqa: E402
from agent.pan_guard import GUARD, scrub  # noqa: E402
from tests.agent import pan_corpus  # noqa: E402


def _ts(rng: random.Random) -> str:
    return (
        f"2026-11-21 {rng.randint(7, 21):02d}:{rng.randint(0, 59):02d}:"
        f"{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}"
    )


def _ean(rng: random.Random) -> str:
    body = rng.choice(["400", "401", "50", "54", "560", "690", "76", "80", "87", "30"])
    body += "".join(rng.choice("0123456789") for _ in range(12 - len(body)))
    odd = sum(int(c) for c in body[0::2])
    even = sum(int(c) for c in body[1::2])
    return body + str((10 - (odd + 3 * even) % 10) % 10)


def ordinary_line(rng: random.Random) -> str:
    ts, lane = _ts(rng), rng.randint(1, 12)
    stan, amount = f"{rng.randint(0, 999999):06d}", rng.randint(50, 50000)
    choices: list[Callable[[], str]] = [
        lambda: (
            f"{ts} INFO  [ecr] -> SALE amount={amount} currency=EUR ref=ORD-2026-{stan} lane={lane}"
        ),
        lambda: f"{ts} DEBUG [ecr] <- ACK seq={rng.randint(0, 255)}",
        lambda: f"{ts} DEBUG [pinpad] state=WAIT_CARD timeout=60s",
        lambda: f"{ts} INFO  [pinpad] card inserted, application A0000000041010 selected",
        lambda: f"{ts} INFO  [host] connecting to 10.20.{lane}.40:443 (attempt 1)",
        lambda: (
            f"{ts} INFO  [host] response rc=00 auth={rng.randint(0, 999999):06d} "
            f"stan={stan} rrn=6325{rng.randint(0, 99999999):08d} in {rng.randint(200, 4000)} ms"
        ),
        lambda: (
            f"{ts} INFO  [printer] receipt 2026-11-21/{rng.randint(1, 9999):04d} printed "
            f"({rng.randint(10, 60)} lines)"
        ),
        lambda: (
            f"{ts} INFO  [scanner] ean={_ean(rng)} qty={rng.randint(1, 4)} price={amount / 100:.2f}"
        ),
        lambda: f"{ts} INFO  [scanner] ean={_ean(rng)} qty=1",
        lambda: (
            f'{{"ts":"2026-11-21T09:{rng.randint(0, 59):02d}:01.123Z","level":"info",'
            f'"msg":"basket_total","items":{rng.randint(1, 40)},"total_minor":{amount}}}'
        ),
        lambda: f"{ts} INFO  [pos] user=cashier{rng.randint(1, 40)} logged in on lane {lane}",
        lambda: f"{ts} WARN  [host] timeout after 30000 ms, sending reversal stan={stan}",
        lambda: f"{ts} INFO  [ecr] masked pan 411111******1111 exp **/** entry=chip",
        lambda: f"{ts} DEBUG [pinpad] pin entry ok, pinpad=ingenico_{lane} kernel=EMV 4.3",
        lambda: (
            f"{ts} INFO  [pos] loyalty member 9{rng.randint(0, 10**12):012d} points "
            f"{rng.randint(0, 5000)}"
        ),
    ]
    return rng.choice(choices)()


def pos_log(n: int, card_share: float, seed: int = 5) -> list[bytes]:
    rng = random.Random(seed)
    cards = pan_corpus.positives()
    lines = []
    for _ in range(n):
        if rng.random() < card_share:
            lines.append(rng.choice(cards))
        else:
            lines.append(ordinary_line(rng))
    return [line.encode() for line in lines]


def _time(fn: Callable[[], None]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(raw: list[bytes], repeat: int) -> dict[str, list[float]]:
    texts = [b.decode() for b in raw]
    n = len(raw)
    prefilter = pan_guard._PREFILTER.search

    def decode() -> None:
        for b in raw:
            b.decode("utf-8", "replace")

    rule = re.compile(
        r"(?P<ts>\S+ \S+) +INFO +\[host\] response rc=(?P<response_code>\w+) "
        r"auth=(?P<auth_code>\w+) stan=(?P<stan>\d+) rrn=(?P<rrn>\d+)"
    ).match

    def rule_only() -> None:
        for t in texts:
            rule(t)

    def prefilter_only() -> None:
        for t in texts:
            prefilter(t)

    def guard() -> None:
        guard_scrub = GUARD.scrub
        for t in texts:
            guard_scrub(t)

    def decode_and_guard() -> None:
        guard_scrub = GUARD.scrub
        for b in raw:
            guard_scrub(b.decode("utf-8", "replace"))

    runs: dict[str, list[float]] = {
        "decode": [],
        "rule": [],
        "prefilter": [],
        "scrub": [],
        "decode+scrub": [],
    }
    fns = {"decode": decode, "rule": rule_only, "prefilter": prefilter_only, "scrub": guard}
    fns["decode+scrub"] = decode_and_guard
    for _ in range(repeat):
        for name, fn in fns.items():
            runs[name].append(n / _time(fn))
    return runs


def false_positives(samples: int, seed: int = 5) -> None:
    rng = random.Random(seed)
    print("\nShare of random digit runs (not card numbers) that get masked:")
    print("| run | masked |\n|---|---|")
    for length in (13, 14, 15, 16, 17, 18, 19, 20, 25, 30):
        hits = 0
        for _ in range(samples):
            digits = "".join(rng.choice("0123456789") for _ in range(length))
            hits += scrub(f"id {digits} end")[1] > 0
        print(f"| {length} uniformly random digits | {100 * hits / samples:.1f} % |")
    hits = 0
    for _ in range(samples):
        hits += scrub(f"ean {_ean(rng)}")[1] > 0
    print(f"| EAN-13 barcode (the mix's prefixes, valid EAN check digit) | "
          f"{100 * hits / samples:.1f} % |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--false-positives", action="store_true")
    ap.add_argument("--samples", type=int, default=20_000, help="per row of --false-positives")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    print(f"Python {sys.version.split()[0]}, {args.lines:,} lines, {args.repeat} repeats")
    for share in (0.01, 0.0, 0.1, 1.0):
        raw = pos_log(args.lines, share)
        slow = sum(pan_guard._PREFILTER.search(b.decode()) is not None for b in raw)
        masked = sum(scrub(b.decode())[1] > 0 for b in raw)
        runs = measure(raw, args.repeat)
        med = {k: statistics.median(v) for k, v in runs.items()}
        print(
            f"\ncard-bearing lines {share:.0%}: {slow / len(raw):.1%} of lines pass the "
            f"prefilter, {masked / len(raw):.2%} get masked"
        )
        print("| what | lines/s (median) | runs |\n|---|---|---|")
        for name, values in runs.items():
            print(f"| {name} | {med[name]:,.0f} | {', '.join(f'{v:,.0f}' for v in values)} |")
        print(f"| rule / scrub, ratio of medians | {med['rule'] / med['scrub']:.2f} | |")
    if args.false_positives:
        false_positives(args.samples)


if __name__ == "__main__":
    main()
