"""Agent footprint at the default config: peak and steady RSS, CPU % of a core.

Starts a real collector and a real agent (default intervals: host sample
every 60 s, uplink every 5 s) and samples the agent process once a second
for ``--seconds`` (default 300). If ``prometheus-node-exporter`` is
installed, it runs beside the agent on a loopback port and is measured the
same way, as the baseline of a small Go exporter.

    .venv/bin/python bench/agent_footprint.py [--seconds 300]

Prints a Markdown table row per process for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.agents import start_agent, write_config  # noqa: E402
from tests.helpers import create_token, start_collector  # noqa: E402

DEFAULTS = {
    "uplink": {"interval_s": 5.0, "batch_max_events": 500, "backoff_initial_s": 1.0,
               "backoff_max_s": 300.0},
    "host": {"interval_s": 60.0},
    "log": {"level": "info", "format": "json"},
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sampler:
    def __init__(self, name: str, pid: int) -> None:
        self.name = name
        self.proc = psutil.Process(pid)
        self.rss: list[int] = []
        times = self.proc.cpu_times()
        self.cpu0 = times.user + times.system
        self.t0 = time.monotonic()

    def sample(self) -> None:
        self.rss.append(self.proc.memory_info().rss)

    def row(self) -> str:
        times = self.proc.cpu_times()
        cpu = (times.user + times.system - self.cpu0) / (time.monotonic() - self.t0) * 100
        steady = statistics.median(self.rss[len(self.rss) // 2 :])
        return (
            f"| {self.name} | {len(self.rss)} s | {max(self.rss) / 2**20:.1f} MiB "
            f"| {steady / 2**20:.1f} MiB | {cpu:.3f} % |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="posmon-bench-") as tmp:
        work = Path(tmp)
        collector = start_collector(work / "collector.db")
        extra = []
        try:
            token = create_token(work / "collector.db", terminal="T-1", store="S-1")
            config = write_config(work, collector.url, token, **DEFAULTS)  # type: ignore[arg-type]
            agent = start_agent(config)
            samplers = [Sampler("posmon-agent (default config)", agent.proc.pid)]
            exporter = shutil.which("prometheus-node-exporter")
            if exporter:
                node = subprocess.Popen(
                    [exporter, f"--web.listen-address=127.0.0.1:{free_port()}"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                extra.append(node)
                time.sleep(1)
                samplers.append(Sampler("prometheus-node-exporter (idle)", node.pid))
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                for s in samplers:
                    s.sample()
                time.sleep(1)
            print(
                "| process | duration | peak RSS | steady RSS (median, 2nd half) "
                "| CPU (% of a core) |"
            )
            print("|---|---|---|---|---|")
            for s in samplers:
                print(s.row())
            agent.stop()
        finally:
            for proc in extra:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=10)
            collector.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
