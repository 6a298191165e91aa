"""Accumulate the results of one probe over one window into a ``probe_window``.

Pure arithmetic, no I/O. Definitions (stable, the README quotes them):

- ``loss_pct`` = 100 × (sent − ok) / sent; 0.0 when nothing was sent.
- RTT statistics use only ok results that carry an ``rtt_ms``; each is
  ``None`` when there is none.
- ``rtt_p95_ms`` is the 95th percentile by *nearest rank*: with the n RTTs
  sorted ascending, the value at 1-based rank ⌈0.95 × n⌉ (so always one of
  the observed values, no interpolation).
- ``jitter_ms`` is the mean absolute difference between consecutive ok RTTs
  in arrival order (the |D(i−1, i)| of RFC 3550 §6.4.1, but averaged plainly,
  *without* the 1/16 exponential smoothing); ``None`` with fewer than two.
- ``errors`` counts failed results by error code.
- ``extras``: for each key, the value from the last result (ok or not) that
  carried that key.
"""

from __future__ import annotations

import itertools
import math
from datetime import datetime

from protocol.events import ProbeWindow, Role
from protocol.fields import Scalar

from .base import ProbeResult


def nearest_rank(sorted_values: list[float], pct: float) -> float:
    """The ``pct`` percentile of ascending ``sorted_values`` by nearest rank."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


class Window:
    """Results of one probe against one target over one window."""

    def __init__(self) -> None:
        self._sent = 0
        self._ok = 0
        self._rtts: list[float] = []
        self._errors: dict[str, int] = {}
        self._extras: dict[str, Scalar] = {}

    @property
    def sent(self) -> int:
        return self._sent

    def add(self, result: ProbeResult) -> None:
        self._sent += 1
        if result.ok:
            self._ok += 1
            if result.rtt_ms is not None:
                self._rtts.append(result.rtt_ms)
        else:
            code = result.error or "unknown"
            self._errors[code] = self._errors.get(code, 0) + 1
        self._extras.update(result.extras)

    def to_event(
        self,
        ts: datetime,
        *,
        probe: str,
        target: str,
        role: Role,
        acquirer: str | None,
        window_s: float,
    ) -> ProbeWindow:
        """The ``probe_window`` event (``seq`` 0: the spool assigns it)."""
        rtts = self._rtts
        loss = 100.0 * (self._sent - self._ok) / self._sent if self._sent else 0.0
        rtt_min = rtt_avg = rtt_p95 = rtt_max = jitter = None
        if rtts:
            ordered = sorted(rtts)
            rtt_min = ordered[0]
            rtt_max = ordered[-1]
            rtt_avg = sum(rtts) / len(rtts)
            rtt_p95 = nearest_rank(ordered, 95)
        if len(rtts) >= 2:
            jitter = sum(abs(b - a) for a, b in itertools.pairwise(rtts)) / (len(rtts) - 1)
        return ProbeWindow(
            seq=0,
            ts=ts,
            probe=probe,
            target=target,
            role=role,
            acquirer=acquirer,
            window_s=window_s,
            sent=self._sent,
            ok=self._ok,
            loss_pct=loss,
            rtt_min_ms=rtt_min,
            rtt_avg_ms=rtt_avg,
            rtt_p95_ms=rtt_p95,
            rtt_max_ms=rtt_max,
            jitter_ms=jitter,
            errors=dict(self._errors),
            extras=dict(self._extras),
        )
