"""What each fault does to what an agent sees: probe attempts, payments, devices, host, uploads.

Pure functions of the faults active at a moment (no I/O, no clock). The
symptoms are the ones a real store shows:

============================  ===========================================================
fault                         symptoms
============================  ===========================================================
router_down                   link up; gateway, DNS, ISP anchors, NTP, acquirers and the
                              collector all fail; no uploads (backlog after)
isp_down                      link and gateway fine; DNS, anchors, NTP, acquirers and the
                              collector time out; no uploads (backlog after)
wifi_weak                     Wi-Fi probe fails ``weak_signal`` (about -87 dBm), every
                              probe past the link loses most attempts; "bad": no uploads
dns_broken                    DNS probe ``servfail``; NTP and acquirer probes fail ``dns``;
                              gateway and ISP anchors (by address) fine
acquirer_outage               that acquirer's TLS probes time out or fail the handshake in
                              every store hit; payments time out or get 91/96
acquirer_path                 one store's probe of that acquirer times out (a firewall);
                              everything else fine
pinpad_unplugged              PIN pad ``disconnected``; payments error at once
power_cut                     UPS ``on_battery`` (warning), ``battery_low`` (fault) 30 s
                              before the UPS gives up; then nothing at all until power
                              returns; then host boot, agent start, open payments
                              recorded as timeouts dated at their deadline
clock_skewed                  NTP fails ``clock_offset`` (offset in extras); TLS probes
                              fail ``tls_not_yet_valid`` (clock behind) or
                              ``tls_expired`` (ahead) when the skew passes a day
host_starved                  host samples at ~100 % CPU and ~97 % memory; payments time
                              out; probes mostly fine
============================  ===========================================================

Any fault with ``hold_uploads = true`` also cuts its stores off from the
collector alone (a proxy or firewall in front of it): the collector probe
times out and reports wait in the spool until the fault ends.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from protocol.fields import Scalar

from .plan import Fault

DAY_S: Final = 86400
#: The UPS reports battery_low this long before it gives up.
BATTERY_LOW_S: Final = 30


@dataclass(frozen=True, slots=True)
class ProbeDef:
    """One simulated probe, as the agent's config would define it."""

    name: str
    type: str  # icmp, dns, tls, http, ntp, link, wifi
    target: str
    role: str
    acquirer: str | None = None
    #: typical round-trip time in ms (None: the probe measures none)
    rtt_ms: float | None = None


@dataclass(frozen=True, slots=True)
class AttemptEffect:
    """How a fault changes one probe attempt."""

    fail_p: float
    errors: tuple[str, ...]
    rtt_factor: float = 1.0
    extras: tuple[tuple[str, Scalar], ...] = ()


def active(faults: Iterable[Fault], at: datetime) -> list[Fault]:
    return [f for f in faults if f.active(at)]


def dark(fault: Fault, at: datetime) -> bool:
    """True while a power cut has the store dark (after the UPS gave up)."""
    return fault.kind == "power_cut" and fault.dark_start <= at < fault.end


def uploads_blocked(faults: Iterable[Fault], at: datetime) -> bool:
    """The store's WAN is down for the agents: reports wait in the spool."""
    for fault in active(faults, at):
        if fault.kind in ("router_down", "isp_down") or dark(fault, at):
            return True
        if fault.spec.hold_uploads:
            return True
        if fault.kind == "wifi_weak" and fault.spec.severity == "bad":
            return True
    return False


def agent_down(faults: Iterable[Fault], at: datetime) -> bool:
    return any(dark(f, at) for f in faults)


def _wan(probe: ProbeDef, error: str, gateway_error: str | None) -> AttemptEffect | None:
    if probe.role == "link":
        return None
    if probe.role == "gateway":
        return None if gateway_error is None else AttemptEffect(1.0, (gateway_error,))
    return AttemptEffect(1.0, (error,))


def attempt_effect(probe: ProbeDef, fault: Fault) -> AttemptEffect | None:
    """What ``fault`` does to one attempt of ``probe`` (None: nothing)."""
    effect = _kind_effect(probe, fault)
    if effect is None and fault.spec.hold_uploads and probe.role == "collector":
        return AttemptEffect(1.0, ("timeout",))  # the collector cannot be reached from here
    return effect


def _kind_effect(probe: ProbeDef, fault: Fault) -> AttemptEffect | None:
    kind = fault.kind
    if kind == "router_down":
        return _wan(probe, "unreachable", "timeout")
    if kind == "isp_down":
        return _wan(probe, "timeout", None)
    if kind == "wifi_weak":
        if probe.type == "wifi":
            return AttemptEffect(1.0, ("weak_signal",), extras=(("signal_dbm", -87),))
        if probe.role == "link":
            return None
        loss = 0.8 if fault.spec.severity == "bad" else 0.4
        return AttemptEffect(loss, ("timeout",), rtt_factor=4.0)
    if kind == "dns_broken":
        if probe.role == "dns":
            return AttemptEffect(1.0, ("servfail",))
        if probe.type in ("ntp", "tls") and probe.role in ("isp", "acquirer"):
            return AttemptEffect(1.0, ("dns",))
        return None
    if kind == "acquirer_outage":
        if probe.role == "acquirer" and probe.acquirer == fault.acquirer:
            return AttemptEffect(0.95, ("timeout", "tls_handshake_failed"))
        return None
    if kind == "acquirer_path":
        if probe.role == "acquirer" and probe.acquirer == fault.acquirer:
            return AttemptEffect(1.0, ("timeout",))
        return None
    if kind == "clock_skewed":
        offset_s = fault.spec.offset_s
        if probe.type == "ntp":
            return AttemptEffect(
                1.0, ("clock_offset",), extras=(("clock_offset_ms", offset_s * 1000.0),)
            )
        if probe.type == "tls" and abs(offset_s) >= DAY_S:
            return AttemptEffect(1.0, ("tls_not_yet_valid" if offset_s < 0 else "tls_expired",))
        return None
    if kind == "host_starved":
        return AttemptEffect(0.02, ("timeout",), rtt_factor=3.0)
    return None  # pinpad_unplugged, power_cut (dark: no attempts at all)


@dataclass(frozen=True, slots=True)
class Failure:
    """How a payment fails: outcome, response code, message."""

    outcome: str  # timeout | error | declined (technical)
    response_code: str | None = None
    message: str | None = None


def _pick(rng: random.Random, choices: Sequence[tuple[float, Failure]]) -> Failure:
    roll = rng.random()
    for weight, failure in choices:
        roll -= weight
        if roll < 0:
            return failure
    return choices[-1][1]


_TIMEOUT = Failure("timeout")
_NO_ROUTE = Failure("error", message="no connection to the acquirer")


def payment_failure(fault: Fault, acquirer: str, rng: random.Random) -> Failure | None:
    """How ``fault`` breaks a payment to ``acquirer`` started while it runs (None: it does not)."""
    kind = fault.kind
    if kind in ("router_down", "isp_down"):
        return _pick(rng, [(0.65, _TIMEOUT), (0.35, _NO_ROUTE)])
    if kind == "wifi_weak":
        if rng.random() >= (0.85 if fault.spec.severity == "bad" else 0.45):
            return None
        return _pick(rng, [(0.7, _TIMEOUT), (0.3, _NO_ROUTE)])
    if kind == "dns_broken":
        unresolved = Failure("error", message=f"cannot resolve pay.{acquirer}.example")
        return _pick(rng, [(0.8, unresolved), (0.2, _TIMEOUT)])
    if kind == "acquirer_outage":
        if acquirer != fault.acquirer or rng.random() >= 0.9:
            return None
        return _pick(
            rng,
            [
                (0.5, _TIMEOUT),
                (0.3, Failure("declined", "91", "issuer or switch inoperative")),
                (0.2, Failure("declined", "96", "system malfunction")),
            ],
        )
    if kind == "acquirer_path":
        if acquirer != fault.acquirer:
            return None
        refused = Failure("error", message=f"connection to pay.{acquirer}.example refused")
        return _pick(rng, [(0.7, _TIMEOUT), (0.3, refused)])
    if kind == "pinpad_unplugged":
        return Failure("error", message="PIN pad not connected")
    if kind == "clock_skewed":
        if abs(fault.spec.offset_s) < DAY_S:
            return None
        return Failure(
            "error",
            message="TLS handshake with the acquirer failed: certificate "
            + ("not yet valid" if fault.spec.offset_s < 0 else "expired"),
        )
    if kind == "host_starved":
        if rng.random() >= 0.7:
            return None
        stalled = Failure("error", message="POS application not responding")
        return _pick(rng, [(0.8, _TIMEOUT), (0.2, stalled)])
    return None  # power_cut: the payments open when it goes dark time out (see agents)


@dataclass(frozen=True, slots=True)
class DeviceReading:
    state: str
    flags: tuple[str, ...] = ()
    reason: str | None = None


OK: Final = DeviceReading("ok")


def pinpad_reading(faults: Iterable[Fault], at: datetime) -> DeviceReading:
    if any(f.kind == "pinpad_unplugged" for f in active(faults, at)):
        return DeviceReading("disconnected", reason="/dev/ttyACM0 not found (unplugged?)")
    return OK


def ups_reading(faults: Iterable[Fault], at: datetime) -> DeviceReading:
    for fault in active(faults, at):
        if fault.kind != "power_cut":
            continue
        if at >= fault.dark_start - timedelta(seconds=BATTERY_LOW_S):
            return DeviceReading(
                "fault",
                ("on_battery", "battery_low"),
                "battery low — the UPS will shut down soon; on battery — mains power failed",
            )
        return DeviceReading("warning", ("on_battery",), "on battery — mains power failed")
    return OK


def host_starved(faults: Iterable[Fault], at: datetime) -> bool:
    return any(f.kind == "host_starved" for f in active(faults, at))


def clock_offset_ms(faults: Iterable[Fault], at: datetime) -> float | None:
    for fault in active(faults, at):
        if fault.kind == "clock_skewed":
            return fault.spec.offset_s * 1000.0
    return None
