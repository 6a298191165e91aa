"""Window arithmetic: exact values on hand-checked inputs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.probes.base import ProbeResult
from agent.probes.window import Window, nearest_rank
from protocol.events import ProbeWindow

TS = datetime(2026, 1, 1, tzinfo=UTC)


def event(results: list[ProbeResult]) -> ProbeWindow:
    w = Window()
    for r in results:
        w.add(r)
    return w.to_event(TS, probe="tcp", target="gw:443", role="gateway", acquirer=None, window_s=60)


def test_mixed_window_exact_figures() -> None:
    ev = event(
        [
            ProbeResult(ok=True, rtt_ms=10.0, extras={"status": 200}),
            ProbeResult(ok=False, error="timeout"),
            ProbeResult(ok=True, rtt_ms=14.0),
            ProbeResult(ok=False, error="refused", extras={"status": 503}),
            ProbeResult(ok=True, rtt_ms=12.0, extras={"tls_version": "TLSv1.3"}),
            ProbeResult(ok=False, error="timeout"),
        ]
    )
    assert ev.seq == 0 and ev.ts == TS and ev.kind == "probe_window"
    assert (ev.probe, ev.target, ev.role, ev.window_s) == ("tcp", "gw:443", "gateway", 60)
    assert ev.sent == 6 and ev.ok == 3
    assert ev.loss_pct == 50.0
    assert ev.rtt_min_ms == 10.0 and ev.rtt_max_ms == 14.0
    assert ev.rtt_avg_ms == 12.0
    assert ev.rtt_p95_ms == 14.0
    # |14 - 10| = 4, |12 - 14| = 2 → mean 3 (failures in between are skipped)
    assert ev.jitter_ms == 3.0
    assert dict(ev.errors) == {"timeout": 2, "refused": 1}
    # last value of each key, whichever result carried it
    assert dict(ev.extras) == {"status": 503, "tls_version": "TLSv1.3"}


def test_all_failed_has_no_rtt_figures() -> None:
    ev = event([ProbeResult(ok=False, error="dns")] * 4)
    assert ev.sent == 4 and ev.ok == 0 and ev.loss_pct == 100.0
    assert ev.rtt_min_ms is None and ev.rtt_avg_ms is None
    assert ev.rtt_p95_ms is None and ev.rtt_max_ms is None and ev.jitter_ms is None
    assert dict(ev.errors) == {"dns": 4}


def test_empty_window() -> None:
    ev = event([])
    assert ev.sent == 0 and ev.ok == 0 and ev.loss_pct == 0.0
    assert ev.rtt_avg_ms is None and dict(ev.errors) == {} and dict(ev.extras) == {}


def test_single_ok_has_no_jitter() -> None:
    ev = event([ProbeResult(ok=True, rtt_ms=7.5)])
    assert ev.rtt_min_ms == ev.rtt_avg_ms == ev.rtt_p95_ms == ev.rtt_max_ms == 7.5
    assert ev.jitter_ms is None
    assert ev.loss_pct == 0.0


def test_ok_without_rtt_counts_but_has_no_rtt() -> None:
    ev = event([ProbeResult(ok=True), ProbeResult(ok=False, error="timeout")])
    assert ev.ok == 1 and ev.loss_pct == 50.0 and ev.rtt_avg_ms is None


def test_p95_nearest_rank_on_1_to_100() -> None:
    # 100 values 1..100 in shuffled order: rank ceil(0.95*100) = 95 → 95
    values = [float((i * 37) % 100 + 1) for i in range(100)]
    assert sorted(values) == [float(i) for i in range(1, 101)]
    ev = event([ProbeResult(ok=True, rtt_ms=v) for v in values])
    assert ev.rtt_p95_ms == 95.0
    assert ev.rtt_min_ms == 1.0 and ev.rtt_max_ms == 100.0 and ev.rtt_avg_ms == 50.5


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, 1.0), (2, 2.0), (10, 10.0), (19, 19.0), (20, 19.0), (21, 20.0), (40, 38.0)],
)
def test_nearest_rank(n: int, expected: float) -> None:
    # rank = ceil(0.95 * n) over the values 1..n
    assert nearest_rank([float(i) for i in range(1, n + 1)], 95) == expected


def test_jitter_exact() -> None:
    ev = event([ProbeResult(ok=True, rtt_ms=v) for v in (20.0, 25.0, 15.0, 15.0, 30.0)])
    # |5| + |10| + |0| + |15| = 30 over 4 differences
    assert ev.jitter_ms == 7.5


def test_loss_pct_one_third() -> None:
    ev = event([ProbeResult(ok=True, rtt_ms=1.0)] * 2 + [ProbeResult(ok=False, error="reset")])
    assert ev.loss_pct == pytest.approx(100 / 3)
    assert ev.sent == 3 and ev.ok == 2
