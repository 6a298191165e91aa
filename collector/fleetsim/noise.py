"""Background noise of one simulated terminal: ordinary trouble that explains no failed payment.

A real fleet is never clean. With a scenario's ``[noise]`` table the
simulated agents also record what a healthy store shows now and then:

- an isolated lossy window on one probe (at the default 10-40 % loss, one
  or two lost attempts of six: the probe does not flip, which takes three
  in a row), and rare single lost attempts on any probe;
- a printer out of paper (``paper_end``, a device fault), at random and, with
  ``paper_end_during_faults``, on a neighbour terminal while its store has a
  fault (the printer is not why the payments failed);
- CPU spikes under the starvation threshold;
- a wider spread of acquirer round trips and payment latencies;
- an NTP offset that wanders within ``ntp_wander_ms``;
- ordinary declines with more issuer codes;
- reports posted twice (an agent that lost the acknowledgement retries).

Noise draws from its own random stream (seeded by the terminal), so turning
it on leaves the fleet's payments and faults exactly as they were without it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from . import faults as fx
from .plan import Fault, Plan
from .scenario import TERMINAL_KINDS, NoiseSpec

#: Attempts in one probe window (60 s window, 10 s interval).
ATTEMPTS_PER_WINDOW: Final = 6
#: CPU of a spike: busy, but under the default starvation threshold (95 %).
CPU_SPIKE: Final = (70.0, 94.0)
#: How long a random paper end lasts before someone changes the roll.
PAPER_END_S: Final = (180.0, 600.0)
#: Ordinary issuer declines (not technical: the payment did not fail at the till).
ORDINARY_DECLINES: Final = ("05", "14", "51", "54", "55", "57", "61", "65")
PAPER_END: Final = fx.DeviceReading("fault", ("paper_end",), "paper end — replace the roll")
#: A noisy attempt's error by probe type.
_NOISE_ERRORS: Final = {"link": "link_down", "wifi": "weak_signal", "dns": "timeout"}


class TerminalNoise:
    """The noise of one terminal; every method is a no-op when the spec is off."""

    def __init__(
        self, spec: NoiseSpec, plan: Plan, store: str, terminal: str, rng: random.Random
    ) -> None:
        self.spec = spec
        self.rng = rng
        self._lossy: dict[int, list[bool]] = {}
        self._ntp_offset = 0.0
        self.paper_end: list[tuple[float, float]] = (
            _paper_end_spans(spec, plan, store, terminal, rng) if spec.on else []
        )

    # -- probes -------------------------------------------------------------------

    def next_lossy_in(self) -> float | None:
        """Seconds until the next lossy window starts (None: never)."""
        rate = self.spec.probe_loss_per_hour
        return self.rng.expovariate(rate / 3600.0) if rate > 0 else None

    def start_lossy(self, n_probes: int) -> None:
        """One probe loses ``probe_loss_pct`` of its next window's attempts, in random places."""
        low, high = self.spec.probe_loss_pct
        loss = self.rng.uniform(low, high) / 100.0
        lost = max(1, min(ATTEMPTS_PER_WINDOW, round(loss * ATTEMPTS_PER_WINDOW)))
        pattern = [True] * lost + [False] * (ATTEMPTS_PER_WINDOW - lost)
        self.rng.shuffle(pattern)
        self._lossy[self.rng.randrange(n_probes)] = pattern

    def attempt_lost(self, index: int) -> bool:
        """True when noise loses this attempt of probe ``index``."""
        pattern = self._lossy.get(index)
        if pattern:
            lost = pattern.pop(0)
            if not pattern:
                del self._lossy[index]
            return lost
        blip = self.spec.probe_blip_pct
        return blip > 0 and self.rng.random() * 100 < blip

    @staticmethod
    def error_of(probe: fx.ProbeDef) -> str:
        return _NOISE_ERRORS.get(probe.type, "timeout")

    def rtt_factor(self, probe: fx.ProbeDef) -> float:
        sigma = self.spec.acquirer_latency_sigma
        if sigma <= 0 or probe.role != "acquirer":
            return 1.0
        return self.rng.lognormvariate(0, sigma)

    def ntp_offset_ms(self, base: float) -> float:
        bound = self.spec.ntp_wander_ms
        if bound <= 0:
            return base
        step = self.rng.gauss(0, bound / 10)
        self._ntp_offset = max(-bound, min(bound, self._ntp_offset + step))
        return round(self._ntp_offset + base, 3)

    # -- host, devices, payments ----------------------------------------------------

    def cpu_spike(self) -> float | None:
        pct = self.spec.cpu_spike_pct
        if pct > 0 and self.rng.random() * 100 < pct:
            return round(self.rng.uniform(*CPU_SPIKE), 1)
        return None

    def printer(self, at: datetime) -> fx.DeviceReading:
        t = at.timestamp()
        if any(start <= t < end for start, end in self.paper_end):
            return PAPER_END
        return fx.OK

    def latency_factor(self) -> float:
        sigma = self.spec.acquirer_latency_sigma
        return self.rng.lognormvariate(0, sigma) if sigma > 0 else 1.0

    def decline_code(self, code: str) -> str:
        return self.rng.choice(ORDINARY_DECLINES) if self.spec.varied_declines else code

    def duplicate(self) -> bool:
        pct = self.spec.duplicate_report_pct
        return pct > 0 and self.rng.random() * 100 < pct


def _neighbour_of(fault: Fault, terminals: Sequence[str]) -> str | None:
    """The terminal of a store whose printer runs out during ``fault`` (not one it hits)."""
    if fault.kind in TERMINAL_KINDS:
        spared = [t for t in terminals if t not in fault.terminals]
        return spared[0] if spared else None
    return terminals[-1]


def _paper_end_spans(
    spec: NoiseSpec, plan: Plan, store: str, terminal: str, rng: random.Random
) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    begin, end = plan.start.timestamp(), plan.end.timestamp()
    rate = spec.paper_end_per_hour
    t = begin
    while rate > 0:
        t += rng.expovariate(rate / 3600.0)
        if t >= end:
            break
        spans.append((t, t + rng.uniform(*PAPER_END_S)))
    if spec.paper_end_during_faults:
        for fault in plan.faults:
            if store not in fault.stores or fault.kind == "power_cut":
                continue
            if _neighbour_of(fault, plan.terminals[store]) != terminal:
                continue
            start, stop = fault.start.timestamp(), fault.end.timestamp()
            spans.append((start + 0.2 * (stop - start), start + 0.6 * (stop - start)))
    return spans
