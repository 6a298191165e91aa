"""CPU and RSS of a process over a measured period, for the footprint benchmarks."""

from __future__ import annotations

import statistics
import time

import psutil


class Sampler:
    """Call :meth:`sample` once a second, then :meth:`finish`; CPU is the
    process's user + system time over the whole period, as % of one core."""

    def __init__(self, name: str, pid: int) -> None:
        self.name = name
        self.proc = psutil.Process(pid)
        self.rss: list[int] = []
        self.cpu0 = self._cpu()
        self.t0 = time.monotonic()
        self.cpu_pct = 0.0

    def _cpu(self) -> float:
        times = self.proc.cpu_times()
        return float(times.user + times.system)

    def sample(self) -> None:
        self.rss.append(self.proc.memory_info().rss)

    def finish(self) -> None:
        self.cpu_pct = (self._cpu() - self.cpu0) / (time.monotonic() - self.t0) * 100

    @property
    def rss_median(self) -> float:
        return float(statistics.median(self.rss))

    def row(self) -> str:
        """``| name | CPU | RSS median | RSS peak |``"""
        return (
            f"| {self.name} | {self.cpu_pct:.2f} % | {self.rss_median / 2**20:.1f} MiB "
            f"| {max(self.rss) / 2**20:.1f} MiB |"
        )
