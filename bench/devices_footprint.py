"""What polling four devices costs the agent: CPU with and without them (issue 4).

Two real agents run side by side in the same run, uploading to one real
collector, with the default intervals otherwise:

- the baseline agent: no devices, no probes;
- the devices agent: the same config plus four ``[[device]]`` items polled
  every 2 s — an ESC/POS printer, a Megatec UPS, an AT modem and a PIN pad in
  link mode (ENQ/ACK), each a ``posmon-agent simulate`` process on its own
  pty (the simulators' CPU is not counted).

Both agents are sampled for ``--seconds`` (default 300) after a warm-up
(``--warmup``, default 10 s): CPU time (user + system) over the measured
period as % of one core, and RSS. The devices' cost is the difference of
the two agents' CPU; the target is ≤ 0.05 % of a core. Afterwards the
collector's database shows that the devices agent really polled (its
``device_status`` events) and that every device stayed ``ok``.

    .venv/bin/python bench/devices_footprint.py [--seconds 300] [--warmup 10]

Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sampling import Sampler  # noqa: E402
from tests.e2e.agents import collector_rows, start_agent, write_config  # noqa: E402
from tests.helpers import create_token, start_collector  # noqa: E402

DEFAULTS = {
    "uplink": {"interval_s": 5.0, "batch_max_events": 500, "backoff_initial_s": 1.0,
               "backoff_max_s": 300.0},
    "host": {"interval_s": 60.0},
    "log": {"level": "info", "format": "json"},
    "probes": {"defaults": False},
}  # fmt: skip

DEVICES = [
    ("printer", {"kind": "escpos_printer"}),
    ("ups", {"kind": "megatec_ups"}),
    ("modem", {"kind": "at_modem"}),
    ("pinpad", {"kind": "ecr_pinpad", "mode": "link", "liveness": "enq"}),
]


def start_simulator(kind: str, link: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "simulate", kind, "--link", str(link)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    if str(link) not in banner:
        raise SystemExit(f"simulator {kind} did not start: {banner!r}")
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument(
        "--only", choices=[k for k, _ in DEVICES], help="poll just this one (to see its share)"
    )
    args = parser.parse_args()
    sims: list[subprocess.Popen[str]] = []
    agents = []
    with tempfile.TemporaryDirectory(prefix="posmon-bench-") as tmp:
        work = Path(tmp)
        collector = start_collector(work / "collector.db")
        try:
            devices = []
            for kind, extra in DEVICES:
                if args.only and kind != args.only:
                    continue
                link = work / f"tty-{kind}"
                sims.append(start_simulator(kind, link))
                devices.append({"name": kind, "port": str(link), "interval_s": 2.0, **extra})
            configs = []
            for name, device_list in (("baseline", []), ("devices", devices)):
                directory = work / name
                directory.mkdir()
                token = create_token(work / "collector.db", terminal=f"T-{name}", store="S-1")
                configs.append(
                    write_config(directory, collector.url, token, device_list=device_list,
                                 agent={"terminal_id": f"T-{name}", "store_id": "S-1"},
                                 **DEFAULTS)  # type: ignore[arg-type]
                )  # fmt: skip
            agents = [start_agent(c, name=c.parent.name) for c in configs]
            print(f"warm-up {args.warmup:g} s, then {args.seconds:g} s measured …", file=sys.stderr)
            time.sleep(args.warmup)
            samplers = [
                Sampler("posmon-agent, no devices", agents[0].proc.pid),
                Sampler("posmon-agent, 4 devices every 2 s", agents[1].proc.pid),
            ]
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                for s in samplers:
                    s.sample()
                time.sleep(1)
            for s in samplers:
                s.finish()
            cpu = [s.cpu_pct for s in samplers]
            for agent in agents:
                agent.stop()
            agents = []
        finally:
            for agent in agents:
                agent.kill()
            for sim in sims:
                sim.kill()
                sim.wait(timeout=10)
                for stream in (sim.stdin, sim.stdout):
                    if stream is not None:
                        stream.close()
            collector.stop()
        rows = [r for r in collector_rows(work / "collector.db") if r[2] == "device_status"]
        bodies = [json.loads(r[3]) for r in rows]
        by_device: dict[str, list[str]] = {}
        for b in bodies:
            by_device.setdefault(b["device"], []).append(b["state"])

    print(
        f"Measured {args.seconds:g} s after a {args.warmup:g} s warm-up, one RSS sample a second.\n"
    )
    print("| process | CPU (% of a core) | RSS median |")
    print("|---|---|---|")
    for s, c in zip(samplers, cpu, strict=True):
        print(f"| {s.name} | {c:.3f} % | {statistics.median(s.rss) / 2**20:.1f} MiB |")
    if len(by_device) != len(devices):
        print(f"INVALID RUN: device_status from {sorted(by_device)} only; see the agents' logs")
        return 1
    added = cpu[1] - cpu[0]
    verdict = "PASS" if added <= 0.05 else "MISS"
    print(f"\nDevices add {added:.3f} % of a core (target ≤ 0.05 %): {verdict}.")
    print(f"device_status events: {len(bodies)}; states seen per device: "
          + "; ".join(f"{d} {sorted(set(v))}" for d, v in sorted(by_device.items())))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
