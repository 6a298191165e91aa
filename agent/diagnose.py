"""``posmon-agent diagnose``: every probe once, now, and the first failing hop named.

The path a payment takes is walked in order — link → gateway → isp → dns →
acquirer — and the first hop whose every probe failed is named with what a
technician should do about it. A hop with no probe configured (or none that
can run here) is skipped, not guessed. A hop where some probes fail and
others pass (one internet anchor of two down) is reported as degraded but
not blamed. Clock trouble (an NTP offset past the limit, a certificate "not
yet valid") and an unreachable collector are named after the path, since
neither stops a payment on its own path.

``checks_json`` / ``render`` turn the result into the ``--json`` document and
the text report; :func:`diagnose` is pure, :func:`run_checks` does the I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from .probes.base import ProbeResult, ProbeUnavailable
from .probes.registry import ProbeFn, build
from .probes.scheduler import attempt
from .probes.settings import ProbeSpec

Verdict = Literal["ok", "fail", "unavailable"]

PATH: Final = ("link", "gateway", "isp", "dns", "acquirer")

CLOCK_ERRORS: Final = frozenset({"clock_offset", "tls_not_yet_valid"})

#: What the first failing hop is, in plain words, and what to do.
PROBLEM: Final[dict[str, tuple[str, str]]] = {
    "link": (
        "the terminal's own network link is down",
        "check the network cable, the Wi-Fi signal or the 4G modem of this terminal",
    ),
    "gateway": (
        "router not answering: likely the store's router or switch",
        "check the router's power and cables; restart it if it is unresponsive",
    ),
    "isp": (
        "internet not: likely the store's ISP",
        "check the router's WAN/internet light and call the store's internet provider",
    ),
    "dns": (
        "names do not resolve: DNS",
        "check the resolver set on the router or terminal; try another resolver",
    ),
    "acquirer": (
        "the acquirer is not reachable from here",
        "check the acquirer's status page or call the acquirer; if other stores fail "
        "too it is the acquirer's outage",
    ),
    "clock": (
        "this terminal's clock is wrong",
        "fix the time (NTP) — TLS to the acquirer fails with a wrong clock",
    ),
    "collector": (
        "the posmon collector is not reachable (payments are not affected)",
        "reports wait in the agent's spool and go out when it is back",
    ),
    "ok": ("every hop is healthy", "nothing to do"),
}

#: What a hop that was seen healthy lets the report say before the problem.
REACHED: Final[dict[str, str]] = {
    "link": "link up",
    "gateway": "router reachable",
    "isp": "internet reachable",
    "dns": "names resolve",
}


@dataclass(frozen=True, slots=True)
class Check:
    """One probe's single attempt."""

    spec: ProbeSpec
    result: ProbeResult | None  # None when unavailable
    reason: str | None = None  # why it is unavailable

    @property
    def verdict(self) -> Verdict:
        if self.result is None:
            return "unavailable"
        return "ok" if self.result.ok else "fail"


@dataclass(frozen=True, slots=True)
class Diagnosis:
    checks: tuple[Check, ...]
    first_failing: str | None  # a hop of PATH, "clock", "collector", or None
    acquirer: str | None  # the failing acquirer's name, when the hop is "acquirer"
    summary: str
    action: str
    degraded: tuple[str, ...]  # hops where some probes failed and others passed


def diagnose(checks: Sequence[Check]) -> Diagnosis:
    """Name the first failing hop of ``checks`` (pure)."""
    degraded: list[str] = []
    found: str | None = None
    acquirer: str | None = None
    for hop in PATH:
        groups = _groups(checks, hop)
        for name, verdicts in groups.items():
            if "ok" in verdicts and "fail" in verdicts:
                degraded.append(hop if name is None else f"{hop} {name}")
            elif "fail" in verdicts and found is None:
                found, acquirer = hop, name
        if found is not None:
            break
    if found is None and any(_clock_trouble(c) for c in checks):
        found = "clock"
    if found is None and any(c.spec.role == "collector" and c.verdict == "fail" for c in checks):
        found = "collector"
    summary, action = PROBLEM[found or "ok"]
    if found == "acquirer" and acquirer:
        summary = summary.replace("the acquirer", f"acquirer {acquirer}")
    if found == "link":
        weak = [c for c in checks if c.result is not None and c.result.error == "weak_signal"]
        if weak:
            summary = "the Wi-Fi signal is too weak"
    if found in PATH:
        # Say the last hop before it that was seen healthy, never one that was not probed.
        before = PATH[: PATH.index(found)]
        healthy = [h for h in before if h in REACHED and _groups(checks, h) and
                   all(v == {"ok"} for v in _groups(checks, h).values())]  # fmt: skip
        if healthy:
            summary = f"{REACHED[healthy[-1]]}, {summary}"
        elif found == "isp":
            summary = "internet not reachable: the store's ISP or its router"
    return Diagnosis(
        checks=tuple(checks),
        first_failing=found,
        acquirer=acquirer,
        summary=summary,
        action=action,
        degraded=tuple(degraded),
    )


def _groups(checks: Sequence[Check], hop: str) -> dict[str | None, set[Verdict]]:
    """Verdicts of the hop's available checks; acquirers each on their own."""
    groups: dict[str | None, set[Verdict]] = {}
    for check in checks:
        if check.spec.role == hop and check.verdict != "unavailable":
            groups.setdefault(check.spec.acquirer, set()).add(check.verdict)
    return groups


def _clock_trouble(check: Check) -> bool:
    return check.result is not None and check.result.error in CLOCK_ERRORS


async def run_checks(
    specs: Sequence[ProbeSpec], builder: Callable[[ProbeSpec], ProbeFn] = build
) -> list[Check]:
    """Every probe once, all at the same time; each bounded by its timeout."""

    async def one(spec: ProbeSpec) -> Check:
        try:
            return Check(spec, await attempt(spec, builder(spec)))
        except ProbeUnavailable as err:
            return Check(spec, None, str(err))

    return list(await asyncio.gather(*(one(s) for s in specs)))


# ── output ──────────────────────────────────────────────────────────────────


def checks_json(d: Diagnosis) -> dict[str, Any]:
    return {
        "first_failing": d.first_failing,
        "acquirer": d.acquirer,
        "summary": d.summary,
        "action": d.action,
        "degraded": list(d.degraded),
        "checks": [
            {
                "name": c.spec.name,
                "type": c.spec.type,
                "target": c.spec.target,
                "role": c.spec.role,
                "acquirer": c.spec.acquirer,
                "verdict": c.verdict,
                "error": None if c.result is None else c.result.error,
                "rtt_ms": None if c.result is None or c.result.rtt_ms is None
                else round(c.result.rtt_ms, 3),
                "extras": {} if c.result is None else dict(c.result.extras),
                "reason": c.reason,
            }
            for c in d.checks
        ],
    }  # fmt: skip


def render(d: Diagnosis) -> str:
    order = {role: i for i, role in enumerate((*PATH, "collector"))}
    checks = sorted(d.checks, key=lambda c: order.get(c.spec.role, len(order)))
    lines = []
    for c in checks:
        mark = {"ok": "ok  ", "fail": "FAIL", "unavailable": "n/a "}[c.verdict]
        role = c.spec.role if c.spec.acquirer is None else f"acquirer {c.spec.acquirer}"
        lines.append(f"  {mark}  {role:<18} {c.spec.name:<28} {_detail(c)}")
    lines.append("")
    if d.first_failing is None:
        lines.append(f"Verdict: {d.summary}.")
    else:
        lines.append(
            f"First failing hop: {d.first_failing}. {d.summary[0].upper()}{d.summary[1:]}."
        )
        lines.append(f"What to do: {d.action}.")
    if d.degraded:
        lines.append(f"Degraded (some probes fail, others pass): {', '.join(d.degraded)}.")
    return "\n".join(lines)


def _detail(c: Check) -> str:
    if c.result is None:
        return f"not available: {c.reason}"
    parts = [] if c.result.ok else [str(c.result.error)]
    if c.result.rtt_ms is not None:
        parts.append(f"{c.result.rtt_ms:.1f} ms")
    for key in ("interface", "speed_mbps", "signal_dbm", "resolved", "status", "clock_offset_ms",
                "cert_days_left", "gateway"):  # fmt: skip
        value = c.result.extras.get(key)
        if value is not None:
            shown = f"{value:.1f}" if isinstance(value, float) else str(value)
            parts.append(f"{key}={shown}")
    return ", ".join(parts) or "ok"
