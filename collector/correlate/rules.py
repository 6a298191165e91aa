"""The attribution rules: one cause per failed payment, from observations. Pure: no I/O.

:func:`decide_local` walks the path from the till outwards and the first
broken hop wins (DESIGN.md, "Causes")::

    power > device > host > link > gateway > isp > dns > clock
          > acquirer_path > acquirer_outage (technical code) > unknown

It decides on evidence that overlaps the payment itself (``[begin, ts]``,
"direct") or comes within :data:`SLACK_S` of it (about one probe window,
"nearby"): a router that failed four minutes earlier and recovered before the
payment is not blamed. For the store-level roles (gateway, isp, dns) a
terminal that does not probe the role itself borrows its store neighbours'
probes, with less confidence.

:func:`decide_fleet` turns a local acquirer_path, acquirer_outage or unknown
into acquirer_outage when at least ``fleet_min_stores`` stores (this one
included) failed payments to the same acquirer within ``±fleet_window_s``
while their own networks were healthy.

Confidence: direct failing evidence 0.9, nearby 0.7; neighbours' evidence
0.75 / 0.6; host starvation 0.8 / 0.65; the clock 0.8 (offset) or 0.75 (TLS
validity errors); acquirer_path 0.8 with the internet seen healthy (0.65
without an internet probe to tell); a technical response code alone 0.5
(0.4 without healthy network evidence); the fleet rule 0.7 at
``fleet_min_stores`` stores, +0.1 per further store, at most 0.95; unknown 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from collector.settings import AttributionSettings
from protocol.causes import TECHNICAL_RESPONSE_CODES, Cause

from . import actions
from .evidence import FLEET_CAUSES, STORE_ROLES, FleetPeers, Observations, ProbeSpan, Ref
from .model import Evidence, TxnRow, Verdict, event_id

#: Evidence this close before a payment began or after it ended still counts ("nearby").
SLACK_S = 60.0
#: A verdict cites at most this many events of its own terminal and store.
MAX_EVIDENCE = 4
#: The fleet verdict cites at most this many other stores' failures.
MAX_PEER_EVIDENCE = 20

#: UPS flags that mean the mains failed (both drivers' names, and the common aliases).
POWER_FLAGS = frozenset(
    {"on_battery", "battery_low", "low_battery", "shutdown_active", "shutdown_imminent"}
)
PINPAD_KINDS = frozenset({"ecr_pinpad", "pinpad"})
MODEM_KINDS = frozenset({"at_modem"})
#: Modem flags that mean the cellular WAN is down (weak_signal alone is a warning).
MODEM_DOWN_FLAGS = frozenset(
    {"no_sim", "sim_locked", "sim_error", "not_registered", "registration_denied", "no_signal"}
)
#: Probe errors that mean a name did not resolve (the DNS failed, not the target).
NAME_ERRORS = frozenset(
    {"dns", "nxdomain", "servfail", "dns_refused", "dns_no_answer", "dns_bad_response",
     "no_resolver"}
)  # fmt: skip
#: TLS errors that mean this terminal's clock is off (the certificate is fine).
TLS_CLOCK_ERRORS = frozenset({"tls_expired", "tls_not_yet_valid"})
#: Probe errors that say something about the clock, not about reachability.
CLOCK_ERRORS = TLS_CLOCK_ERRORS | {"clock_offset"}

DIRECT, NEARBY = 0, 1


@dataclass(frozen=True, slots=True)
class _Frame:
    """The payment ``[begin, end]`` and the nearby frame around it."""

    begin: datetime
    end: datetime
    near_begin: datetime
    near_end: datetime

    @classmethod
    def of(cls, txn: TxnRow) -> _Frame:
        slack = timedelta(seconds=SLACK_S)
        return cls(txn.begin, txn.ts, txn.begin - slack, txn.ts + slack)

    def grade(self, start: datetime, end: datetime) -> int | None:
        """DIRECT if ``[start, end]`` overlaps the payment, NEARBY if only its frame, else None."""
        if start <= self.end and end >= self.begin:
            return DIRECT
        if start <= self.near_end and end >= self.near_begin:
            return NEARBY
        return None

    def distance(self, start: datetime, end: datetime) -> float:
        """Seconds between ``[start, end]`` and the payment (0 when they overlap)."""
        if end < self.begin:
            return (self.begin - end).total_seconds()
        if start > self.end:
            return (start - self.end).total_seconds()
        return 0.0


@dataclass(frozen=True, slots=True)
class _Hit:
    """One piece of evidence for a cause, and how much it alone is worth."""

    confidence: float  # 0 for supporting evidence (a healthy anchor, the restart)
    grade: int
    neighbour: bool
    distance: float
    evidence: Evidence


@dataclass(frozen=True, slots=True)
class _Context:
    txn: TxnRow
    obs: Observations
    settings: AttributionSettings
    frame: _Frame

    def hit(
        self,
        ref: Ref,
        start: datetime,
        end: datetime,
        what: str,
        levels: tuple[float, float],
        *,
        support: bool = False,
    ) -> _Hit | None:
        grade = self.frame.grade(start, end)
        if grade is None:
            return None
        return _Hit(
            confidence=0.0 if support else levels[grade],
            grade=grade,
            neighbour=ref.terminal_id != self.txn.terminal_id,
            distance=self.frame.distance(start, end),
            evidence=Evidence(ref.event_id, ref.kind, ref.ts, ref.terminal_id, what),
        )

    def own(self, span: ProbeSpan) -> bool:
        return span.ref.terminal_id == self.txn.terminal_id

    def role_spans(self, role: str) -> list[ProbeSpan]:
        """Probes of ``role``: this terminal's; for a store role it lacks, its neighbours'."""
        own = [s for s in self.obs.probes if s.role == role and self.own(s)]
        if own or role not in STORE_ROLES:
            return own
        return [s for s in self.obs.probes if s.role == role]

    def probe_hits(
        self, spans: Iterable[ProbeSpan], own: tuple[float, float], neighbour: tuple[float, float]
    ) -> list[_Hit]:
        hits = []
        for span in spans:
            levels = own if self.own(span) else neighbour
            what = actions.probe_what(span, self.txn)
            hit = self.hit(span.ref, span.start, span.end, what, levels)
            if hit is not None:
                hits.append(hit)
        return hits

    def healthy_anchor(self) -> _Hit | None:
        """The nearest healthy window of an internet anchor (isp, else collector)."""
        for role in ("isp", "collector"):
            hits = []
            for span in self.role_spans(role):
                if span.failing or span.loss_pct is None:
                    continue
                what = actions.probe_what(span, self.txn)
                hit = self.hit(span.ref, span.start, span.end, what, (0, 0), support=True)
                if hit is not None:
                    hits.append(hit)
            if hits:
                return min(hits, key=_rank)
        return None


#: local causes that mean the acquirer itself was seen failing
ACQUIRER_SIDE = frozenset({Cause.ACQUIRER_PATH.value, Cause.ACQUIRER_OUTAGE.value})

OWN = (0.9, 0.7)
NEIGHBOUR = (0.75, 0.6)
Check = Callable[[_Context], list[_Hit]]


def _reach_failing(span: ProbeSpan) -> bool:
    """Failing because the target could not be reached (not a name or clock error)."""
    return span.failing and span.error not in NAME_ERRORS and span.error not in CLOCK_ERRORS


def _power(ctx: _Context) -> list[_Hit]:
    hits = []
    for dev in ctx.obs.devices:
        if POWER_FLAGS.intersection(dev.flags):
            hit = ctx.hit(dev.ref, dev.start, dev.end, actions.device_what(dev), OWN)
            hits.append(hit)
    restart = ctx.obs.recorded_after
    for host in ctx.obs.hosts:
        if host.boot_time <= ctx.txn.begin:
            continue
        what = actions.reboot_what(host)
        if restart is not None and host.boot_time <= restart.ref.ts:
            # the payment was still open when the host went down and came back
            hits.append(ctx.hit(host.ref, ctx.txn.begin, ctx.txn.ts, what, OWN))
            what = actions.restart_what(restart)
            hits.append(ctx.hit(restart.ref, ctx.txn.begin, ctx.txn.ts, what, OWN, support=True))
        else:
            hits.append(ctx.hit(host.ref, host.boot_time, host.boot_time, what, (0.85, 0.7)))
    return [h for h in hits if h is not None]


def _device(ctx: _Context) -> list[_Hit]:
    hits = []
    for dev in ctx.obs.devices:
        if dev.device_kind in PINPAD_KINDS and dev.state in ("fault", "disconnected"):
            hits.append(ctx.hit(dev.ref, dev.start, dev.end, actions.device_what(dev), OWN))
    return [h for h in hits if h is not None]


def _host(ctx: _Context) -> list[_Hit]:
    s = ctx.settings
    hits = []
    for host in ctx.obs.hosts:
        if (
            host.cpu_pct >= s.cpu_starved_pct
            or host.mem_pct >= s.mem_starved_pct
            or host.disk_pct >= s.disk_full_pct
        ):
            what = actions.host_what(host, s.cpu_starved_pct, s.mem_starved_pct, s.disk_full_pct)
            hits.append(ctx.hit(host.ref, host.start, host.end, what, (0.8, 0.65)))
    return [h for h in hits if h is not None]


def _link(ctx: _Context) -> list[_Hit]:
    failing = [s for s in ctx.role_spans("link") if s.failing and s.error not in CLOCK_ERRORS]
    hits = ctx.probe_hits(failing, OWN, OWN)
    for dev in ctx.obs.devices:
        if dev.device_kind in MODEM_KINDS and MODEM_DOWN_FLAGS.intersection(dev.flags):
            hit = ctx.hit(dev.ref, dev.start, dev.end, actions.device_what(dev), OWN)
            if hit is not None:
                hits.append(hit)
    return hits


def _gateway(ctx: _Context) -> list[_Hit]:
    failing = [s for s in ctx.role_spans("gateway") if _reach_failing(s)]
    return ctx.probe_hits(failing, OWN, NEIGHBOUR)


def _isp(ctx: _Context) -> list[_Hit]:
    anchors = ctx.role_spans("isp")
    if anchors:
        failing = [s for s in anchors if _reach_failing(s)]
        if failing and _another_anchor_reachable(ctx, anchors, failing):
            return []  # one anchor down while another answers: the internet worked
        return ctx.probe_hits(failing, OWN, NEIGHBOUR)
    # no internet anchor in the store: the collector's endpoint stands in, weakly
    failing = [s for s in ctx.role_spans("collector") if _reach_failing(s)]
    return ctx.probe_hits(failing, (0.6, 0.5), (0.6, 0.5))


def _another_anchor_reachable(
    ctx: _Context, anchors: list[ProbeSpan], failing: list[ProbeSpan]
) -> bool:
    """An anchor with a healthy window over the payment and no failing one there."""
    down = {s.target for s in failing if ctx.frame.grade(s.start, s.end) == DIRECT}
    return any(
        not s.failing
        and s.loss_pct is not None
        and s.target not in down
        and ctx.frame.grade(s.start, s.end) == DIRECT
        for s in anchors
    )


def _dns(ctx: _Context) -> list[_Hit]:
    failing = [s for s in ctx.role_spans("dns") if s.failing and s.error not in CLOCK_ERRORS]
    hits = ctx.probe_hits(failing, OWN, NEIGHBOUR)
    unresolved = [
        s
        for s in ctx.obs.probes
        if s.role != "dns" and ctx.own(s) and s.failing and s.error in NAME_ERRORS
    ]
    return hits + ctx.probe_hits(unresolved, (0.75, 0.6), (0.75, 0.6))


def _clock(ctx: _Context) -> list[_Hit]:
    limit = ctx.settings.clock_max_offset_ms
    hits = []
    tls: dict[str, list[_Hit]] = {}
    for span in ctx.obs.probes:
        if not ctx.own(span):
            continue
        offset = span.clock_offset_ms
        if offset is not None and abs(offset) > limit:
            what = actions.clock_what(span, limit)
            hits.append(ctx.hit(span.ref, span.start, span.end, what, (0.8, 0.7)))
        elif span.failing and span.error == "clock_offset":
            what = actions.probe_what(span, ctx.txn)
            hits.append(ctx.hit(span.ref, span.start, span.end, what, (0.8, 0.7)))
        elif span.failing and TLS_CLOCK_ERRORS.intersection(span.errors):
            what = actions.probe_what(span, ctx.txn)
            hit = ctx.hit(span.ref, span.start, span.end, what, (0.75, 0.6))
            if hit is not None:
                tls.setdefault(span.target, []).append(hit)
    if len(tls) >= 2:  # one expired certificate is that server's problem, two are our clock
        hits += [h for target_hits in tls.values() for h in target_hits]
    return [h for h in hits if h is not None]


def _acquirer_path(ctx: _Context) -> list[_Hit]:
    wanted = ctx.txn.acquirer
    failing = [
        s
        for s in ctx.role_spans("acquirer")
        # a TLS validity error on the acquirer alone is its certificate, not our clock
        if s.failing and s.error not in NAME_ERRORS and (wanted is None or s.acquirer == wanted)
    ]
    anchor = ctx.healthy_anchor()
    levels = (0.8, 0.6) if anchor is not None else (0.65, 0.55)
    hits = ctx.probe_hits(failing, levels, levels)
    if hits and anchor is not None:
        hits.append(anchor)
    return hits


def _technical(ctx: _Context) -> list[_Hit]:
    txn = ctx.txn
    if not (txn.technical or txn.response_code in TECHNICAL_RESPONSE_CODES):
        return []
    anchor = ctx.healthy_anchor()
    confidence = 0.5 if anchor is not None else 0.4
    what = actions.technical_what(txn)
    evidence = Evidence(event_id(txn.agent_id, txn.seq), "txn", txn.ts, txn.terminal_id, what)
    own = _Hit(confidence, DIRECT, False, 0.0, evidence)
    return [own] if anchor is None else [own, anchor]


#: The checks in order of precedence: the first with evidence names the cause.
CHECKS: tuple[tuple[Cause, Check], ...] = (
    (Cause.POWER, _power),
    (Cause.DEVICE, _device),
    (Cause.HOST, _host),
    (Cause.LINK, _link),
    (Cause.GATEWAY, _gateway),
    (Cause.ISP, _isp),
    (Cause.DNS, _dns),
    (Cause.CLOCK, _clock),
    (Cause.ACQUIRER_PATH, _acquirer_path),
    (Cause.ACQUIRER_OUTAGE, _technical),
)


def _rank(hit: _Hit) -> tuple[float, int, bool, float, int, str]:
    kind_rank = 0 if hit.evidence.kind == "probe_change" else 1
    return (
        -hit.confidence if hit.confidence else 1.0,  # supporting evidence last
        hit.grade,
        hit.neighbour,
        hit.distance,
        kind_rank,
        hit.evidence.event_id,
    )


def _select(hits: Iterable[_Hit], limit: int) -> tuple[Evidence, ...]:
    chosen: list[Evidence] = []
    seen: set[str] = set()
    for hit in sorted(hits, key=_rank):
        if hit.evidence.event_id in seen:
            continue
        seen.add(hit.evidence.event_id)
        chosen.append(hit.evidence)
        if len(chosen) == limit:
            break
    return tuple(chosen)


def unknown(txn: TxnRow) -> Verdict:
    """No evidence: the cause is unknown, never a guess."""
    return Verdict(Cause.UNKNOWN, 0.0, (), actions.action(Cause.UNKNOWN, txn))


def decide_local(txn: TxnRow, obs: Observations, settings: AttributionSettings) -> Verdict:
    """The cause of ``txn`` from its own terminal's and store's evidence."""
    ctx = _Context(txn, obs, settings, _Frame.of(txn))
    for cause, check in CHECKS:
        hits = check(ctx)
        confidence = max((h.confidence for h in hits), default=0.0)
        if confidence > 0:
            evidence = _select(hits, MAX_EVIDENCE)
            return Verdict(cause, round(confidence, 3), evidence, actions.action(cause, txn))
    return unknown(txn)


def fleet_confidence(stores: int, settings: AttributionSettings) -> float:
    """The fleet rule's confidence with ``stores`` stores failing together."""
    return round(min(0.95, 0.7 + 0.1 * (stores - settings.fleet_min_stores)), 3)


def decide_fleet(
    txn: TxnRow, local: Verdict, peers: FleetPeers, settings: AttributionSettings
) -> Verdict:
    """``local``, or acquirer_outage when enough stores failed the same acquirer together."""
    if local.cause not in FLEET_CAUSES or txn.acquirer is None:
        return local
    others = [
        p
        for p in peers.failures
        if p.store_id != txn.store_id
        and p.local_cause in FLEET_CAUSES
        and p.acquirer == txn.acquirer
    ]
    stores = {p.store_id for p in others}
    if len(stores) + 1 < settings.fleet_min_stores:
        return local
    # Payments fail now and then for no visible reason; in a big fleet a few such
    # timeouts to one acquirer always fall in the same minutes. So stores that saw the
    # acquirer itself fail (its probes, a technical response code) must be among them.
    seen_failing = {p.store_id for p in others if p.local_cause in ACQUIRER_SIDE}
    if local.cause in ACQUIRER_SIDE:
        seen_failing.add(txn.store_id)
    if len(seen_failing) < settings.fleet_min_acquirer_evidence:
        return local
    seen: set[str] = set()
    peer_evidence: list[Evidence] = []
    for peer in others:  # nearest first, one per store
        if peer.store_id in seen or len(peer_evidence) == MAX_PEER_EVIDENCE:
            continue
        seen.add(peer.store_id)
        ref = peer.ref
        peer_evidence.append(
            Evidence(ref.event_id, ref.kind, ref.ts, ref.terminal_id, actions.peer_what(peer))
        )
    return Verdict(
        Cause.ACQUIRER_OUTAGE,
        fleet_confidence(len(stores) + 1, settings),
        local.evidence + tuple(peer_evidence),
        actions.action(Cause.ACQUIRER_OUTAGE, txn),
    )
