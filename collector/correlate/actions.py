"""Plain words: what to do about each cause, and what each piece of evidence shows.

Pure: no I/O. The README quotes :data:`ACTIONS`.
"""

from __future__ import annotations

from datetime import datetime

from protocol.causes import Cause

from .evidence import AgentStart, DeviceSpan, HostObs, PeerFailure, ProbeSpan
from .model import IN_DOUBT_ACTION, TxnRow

#: The suggested action per cause (an in-doubt payment gets IN_DOUBT_ACTION first).
ACTIONS: dict[Cause, str] = {
    Cause.POWER: (
        "The terminal or the store lost power: check the mains supply and the UPS (battery, "
        "shutdown settings); keep the router and the terminal on the UPS."
    ),
    Cause.DEVICE: (
        "The PIN pad was disconnected or in fault: check its cable and power supply and "
        "restart it; replace it if it keeps failing."
    ),
    Cause.HOST: (
        "The POS computer was starved (CPU, memory or disk full): stop runaway programs, "
        "free disk space, restart it if needed."
    ),
    Cause.LINK: (
        "The terminal's own connection was down: check its network cable or Wi-Fi signal, "
        "or the mobile modem's SIM, antenna and signal."
    ),
    Cause.GATEWAY: (
        "The store's router or local network failed: check the router's power and cables "
        "and restart it; payments work again when it is back."
    ),
    Cause.ISP: (
        "The store's internet connection was down: check the ISP line/router WAN, contact "
        "the ISP; payments work again when it is back."
    ),
    Cause.DNS: (
        "Names did not resolve (DNS): check the DNS servers set on the router or the "
        "terminal; contact the ISP if its DNS servers are down."
    ),
    Cause.CLOCK: (
        "The terminal's clock was wrong, so secure connections failed: fix its time "
        "synchronisation (NTP) and set the clock right."
    ),
    Cause.ACQUIRER_PATH: (
        "This store could not reach the acquirer although its internet worked: check "
        "firewall, proxy and routing to the acquirer; report it to the ISP or the acquirer."
    ),
    Cause.ACQUIRER_OUTAGE: (
        "The acquirer was failing (technical response codes, or many stores at once): "
        "nothing to fix in the store; follow the acquirer's status and retry when it is back."
    ),
    Cause.UNKNOWN: (
        "No evidence explains this failure: check the POS application's and the terminal's "
        "logs; if it repeats, run 'posmon-agent diagnose' on the terminal."
    ),
}


def action(cause: Cause, txn: TxnRow) -> str:
    """The suggested action for ``txn`` failing from ``cause``."""
    text = ACTIONS[cause]
    return f"{IN_DOUBT_ACTION} {text}" if txn.in_doubt else text


def clock_time(ts: datetime) -> str:
    return ts.strftime("%H:%M:%S UTC")


def _whose(terminal_id: str, txn: TxnRow) -> str:
    return "" if terminal_id == txn.terminal_id else f"terminal {terminal_id} of the same store: "


def _probe_name(span: ProbeSpan) -> str:
    acquirer = f" ({span.acquirer})" if span.role == "acquirer" and span.acquirer else ""
    return f"{span.role} probe {span.probe} {span.target}{acquirer}"


def probe_what(span: ProbeSpan, txn: TxnRow) -> str:
    """A failing or healthy probe, e.g. "gateway probe icmp 192.168.1.1 failing: timeout
    (100 % loss over 60 s)"."""
    name = _whose(span.ref.terminal_id, txn) + _probe_name(span)
    if span.loss_pct is None:  # a probe_change
        if span.failing:
            return f"{name} started failing at {clock_time(span.start)}: {span.error or 'error'}"
        return f"{name} healthy again from {clock_time(span.start)}"
    over = f"{span.loss_pct:.0f} % loss over {span.window_s or 0:.0f} s"
    if span.failing:
        return f"{name} failing: {span.error or 'no answer'} ({over})"
    return f"{name} healthy ({over}, window ending {clock_time(span.end)})"


def clock_what(span: ProbeSpan, limit_ms: float) -> str:
    offset = span.clock_offset_ms or 0.0
    return (
        f"{span.probe} probe {span.target}: clock offset {offset:+.0f} ms "
        f"(limit ±{limit_ms:.0f} ms)"
    )


def device_what(span: DeviceSpan) -> str:
    flags = f" [{', '.join(span.flags)}]" if span.flags else ""
    reason = f": {span.reason}" if span.reason else ""
    return f"{span.device_kind} {span.device} {span.state}{flags}{reason}"


def host_what(host: HostObs, cpu: float, mem: float, disk: float) -> str:
    return (
        f"host starved at {clock_time(host.end)}: CPU {host.cpu_pct:.0f} %, memory "
        f"{host.mem_pct:.0f} %, disk {host.disk_pct:.0f} % (limits {cpu:.0f} / {mem:.0f} / "
        f"{disk:.0f} %)"
    )


def reboot_what(host: HostObs) -> str:
    return f"host rebooted at {clock_time(host.boot_time)}, after the payment started"


def restart_what(start: AgentStart) -> str:
    how = "an unclean stop" if start.unclean else "a stop"
    return (
        f"agent started again at {clock_time(start.ref.ts)} after {how}; the payment was "
        "still open and recorded as a timeout then"
    )


def technical_what(txn: TxnRow) -> str:
    return (
        f"payment {txn.txn_id} {txn.outcome} with technical response code "
        f"{txn.response_code or '?'} (the acquirer or the card network failed)"
    )


def peer_what(peer: PeerFailure) -> str:
    return (
        f"store {peer.store_id}: payment {peer.txn_id} to {peer.acquirer} "
        f"{peer.outcome} at {clock_time(peer.ref.ts)} (local cause {peer.local_cause})"
    )
