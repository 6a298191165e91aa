"""The agent's ticks: the moments its periodic work may start.

Sources that run every N seconds (probes, device polls) start on shared
ticks — every ``tick_s``, at a phase drawn at random when the agent starts —
so work that is due together shares one wake-up of the event loop instead of
each paying for its own, and two agents never tick together.
"""

from __future__ import annotations

import math
import random


class Ticks:
    def __init__(self, tick_s: float) -> None:
        if not tick_s > 0:
            raise ValueError("tick_s must be > 0")
        self.tick_s = tick_s
        self.phase = random.uniform(0.0, tick_s)

    def at_or_after(self, t: float) -> float:
        """The first tick at or after ``t`` (the loop's monotonic clock)."""
        n = math.ceil((t - self.phase) / self.tick_s - 1e-9)
        return self.phase + float(n) * self.tick_s
