"""The attribution rules, pure: observations in, one verdict out.

The builders here (``txn``, ``window``, ``change``, ``device``, ``host``, ...)
are shared with test_rules_props.py and test_rules_fleet.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

from collector.correlate.evidence import (
    AgentStart,
    DeviceSpan,
    HostObs,
    Observations,
    ProbeSpan,
    Ref,
)
from collector.correlate.model import IN_DOUBT_ACTION, TxnRow, Verdict
from collector.correlate.rules import decide_local
from collector.settings import AttributionSettings
from protocol.causes import Cause

T = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)  # the payment starts here
END = T + timedelta(seconds=30)  # ... and times out here
S = AttributionSettings()
_seq = count(1)


def at(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


def ref(kind: str, ts: datetime, terminal: str = "T-1") -> Ref:
    return Ref(f"agent-{terminal}:{next(_seq)}", kind, ts, terminal)


def txn(**kw: object) -> TxnRow:
    fields: dict[str, object] = {
        "terminal_id": "T-1",
        "store_id": "S-1",
        "txn_id": "tx-1",
        "agent_id": "agent-T-1",
        "seq": 10_000,
        "ts": END,
        "started_at": T,
        "acquirer": "ACQ",
        "outcome": "timeout",
        "response_code": None,
        "technical": False,
        "in_doubt": False,
    }
    fields.update(kw)
    return TxnRow(**fields)  # type: ignore[arg-type]


def window(
    role: str,
    end: float,
    *,
    loss: float = 100.0,
    error: str | None = "timeout",
    probe: str = "icmp",
    target: str | None = None,
    terminal: str = "T-1",
    acquirer: str | None = None,
    offset: float | None = None,
    window_s: float = 60.0,
) -> ProbeSpan:
    """A probe_window ending ``end`` seconds after the payment started."""
    ts = at(end)
    errors = (error,) if error and loss > 0 else ()
    return ProbeSpan(
        ref=ref("probe_window", ts, terminal),
        probe=probe,
        target=target or f"{role}.example",
        role=role,
        acquirer=acquirer if acquirer or role != "acquirer" else "ACQ",
        start=ts - timedelta(seconds=window_s),
        end=ts,
        failing=loss >= S.loss_fail_pct,
        error=errors[0] if errors else None,
        errors=errors,
        loss_pct=loss,
        window_s=window_s,
        clock_offset_ms=offset,
    )


def change(
    role: str,
    start: float,
    end: float,
    *,
    failing: bool = True,
    error: str | None = "timeout",
    probe: str = "icmp",
    target: str | None = None,
    terminal: str = "T-1",
) -> ProbeSpan:
    """A probe_change at ``start`` holding until ``end`` (seconds from the payment's start)."""
    return ProbeSpan(
        ref=ref("probe_change", at(start), terminal),
        probe=probe,
        target=target or f"{role}.example",
        role=role,
        acquirer="ACQ" if role == "acquirer" else None,
        start=at(start),
        end=at(end),
        failing=failing,
        error=error if failing else None,
        errors=(error,) if failing and error else (),
    )


def device(
    kind: str,
    state: str,
    start: float,
    end: float,
    *,
    flags: tuple[str, ...] = (),
    name: str = "dev",
) -> DeviceSpan:
    return DeviceSpan(
        ref=ref("device_status", at(start)),
        device=name,
        device_kind=kind,
        state=state,
        flags=flags,
        reason=None,
        start=at(start),
        end=at(end),
    )


def host(
    end: float, *, cpu: float = 10.0, mem: float = 30.0, disk: float = 40.0, boot: float = -86400
) -> HostObs:
    return HostObs(
        ref=ref("host_sample", at(end)),
        start=at(end - 60),
        end=at(end),
        cpu_pct=cpu,
        mem_pct=mem,
        disk_pct=disk,
        boot_time=at(boot),
    )


def healthy_store(terminal: str = "T-1") -> list[ProbeSpan]:
    """Every network hop healthy over the payment."""
    return [
        window(role, 45, loss=0, error=None, terminal=terminal)
        for role in ("link", "gateway", "isp", "dns")
    ]


def decide(t: TxnRow | None = None, **obs: object) -> Verdict:
    return decide_local(t or txn(), Observations(**obs), S)  # type: ignore[arg-type]


def ids(v: Verdict) -> list[str]:
    return [e.event_id for e in v.evidence]


# --- each cause ---------------------------------------------------------------------------


def test_ups_on_battery_during_the_payment_is_power() -> None:
    ups = device("megatec_ups", "warning", -20, 200, flags=("on_battery",))
    v = decide(devices=(ups,), probes=tuple(healthy_store()))
    assert v.cause is Cause.POWER
    assert v.confidence == 0.9
    assert ids(v) == [ups.ref.event_id]
    assert "on_battery" in v.evidence[0].what


def test_a_reboot_the_payment_was_recorded_after_is_power() -> None:
    start = AgentStart(ref("agent_event", at(150)), unclean=True)
    after = host(200, boot=120)
    v = decide(hosts=(after,), starts=(start,), recorded_after=start)
    assert v.cause is Cause.POWER
    assert v.confidence == 0.9
    assert ids(v) == [after.ref.event_id, start.ref.event_id]
    assert "rebooted" in v.evidence[0].what


def test_a_reboot_during_the_payment_is_power_without_the_restart_too() -> None:
    v = decide(hosts=(host(60, boot=20),))
    assert (v.cause, v.confidence) == (Cause.POWER, 0.85)


def test_a_plain_agent_restart_without_a_reboot_is_not_power() -> None:
    start = AgentStart(ref("agent_event", at(150)), unclean=True)
    v = decide(hosts=(host(200, boot=-86400),), starts=(start,), recorded_after=start)
    assert v.cause is Cause.UNKNOWN


def test_a_reboot_long_after_the_payment_is_not_power() -> None:
    v = decide(hosts=(host(400, boot=300),))
    assert v.cause is Cause.UNKNOWN


def test_pinpad_disconnected_is_device() -> None:
    pad = device("ecr_pinpad", "disconnected", -100, 400, name="pinpad")
    v = decide(devices=(pad,), probes=tuple(healthy_store()))
    assert (v.cause, v.confidence) == (Cause.DEVICE, 0.9)
    assert "ecr_pinpad pinpad disconnected" in v.evidence[0].what


def test_a_printer_out_of_paper_is_never_blamed() -> None:
    printer = device("escpos_printer", "fault", -100, 400, flags=("paper_end",))
    v = decide(devices=(printer,), probes=tuple(healthy_store()))
    assert v.cause is Cause.UNKNOWN
    assert v.evidence == ()


def test_host_starved_is_host() -> None:
    v = decide(hosts=(host(20, cpu=99.5), host(80)), probes=tuple(healthy_store()))
    assert (v.cause, v.confidence) == (Cause.HOST, 0.8)
    assert "CPU 100 %" in v.evidence[0].what or "CPU 99 %" in v.evidence[0].what


def test_disk_full_is_host() -> None:
    assert decide(hosts=(host(20, disk=99.0),)).cause is Cause.HOST


def test_link_down_is_link() -> None:
    link = window("link", 40, probe="link", error="link_down")
    v = decide(probes=(link, window("gateway", 40, error="unreachable")))
    assert (v.cause, v.confidence) == (Cause.LINK, 0.9)
    assert ids(v)[0] == link.ref.event_id


def test_modem_not_registered_is_link() -> None:
    modem = device("at_modem", "fault", -30, 200, flags=("not_registered",))
    assert decide(devices=(modem,)).cause is Cause.LINK


def test_modem_weak_signal_alone_is_not_link() -> None:
    modem = device("at_modem", "warning", -30, 200, flags=("weak_signal",))
    assert decide(devices=(modem,)).cause is Cause.UNKNOWN


def test_gateway_failing_with_the_link_fine_is_gateway() -> None:
    gw = window("gateway", 40, target="192.168.1.1")
    v = decide(probes=(window("link", 40, loss=0, error=None, probe="link"), gw))
    assert (v.cause, v.confidence) == (Cause.GATEWAY, 0.9)
    assert v.evidence[0].what == (
        "gateway probe icmp 192.168.1.1 failing: timeout (100 % loss over 60 s)"
    )


def test_isp_anchors_failing_with_the_gateway_fine_is_isp() -> None:
    probes = (window("gateway", 40, loss=0, error=None), window("isp", 40, target="1.1.1.1"))
    v = decide(probes=probes)
    assert (v.cause, v.confidence) == (Cause.ISP, 0.9)
    assert v.action.startswith("The store's internet connection was down")


def test_without_an_isp_anchor_the_collector_probe_stands_in_weakly() -> None:
    probes = (window("gateway", 40, loss=0, error=None), window("collector", 40, probe="tls"))
    v = decide(probes=probes)
    assert (v.cause, v.confidence) == (Cause.ISP, 0.6)


def test_dns_failing_with_ip_reachability_fine_is_dns() -> None:
    probes = (*healthy_store()[:3], window("dns", 40, probe="dns", error="servfail"))
    assert decide(probes=probes).cause is Cause.DNS


def test_an_acquirer_probe_that_cannot_resolve_its_name_is_dns() -> None:
    probes = (*healthy_store(), window("acquirer", 40, probe="tcp", error="dns"))
    v = decide(probes=probes)
    assert (v.cause, v.confidence) == (Cause.DNS, 0.75)


def test_clock_offset_past_the_limit_is_clock() -> None:
    ntp = window("isp", 40, probe="ntp", loss=100, error="clock_offset", offset=5000.0)
    v = decide(probes=(*healthy_store(), ntp))
    assert (v.cause, v.confidence) == (Cause.CLOCK, 0.8)
    assert "clock offset +5000 ms" in v.evidence[0].what


def test_tls_validity_errors_on_two_targets_are_clock_but_one_is_not() -> None:
    a = window("acquirer", 40, probe="tls", error="tls_not_yet_valid", target="acq:443")
    b = window("collector", 40, probe="tls", error="tls_not_yet_valid", target="col:443")
    assert decide(probes=(*healthy_store(), a, b)).cause is Cause.CLOCK
    # one target: that server's certificate, not this clock; the path to it fails
    assert decide(probes=(*healthy_store(), a)).cause is Cause.ACQUIRER_PATH


def test_acquirer_probes_failing_with_the_internet_fine_is_acquirer_path() -> None:
    acq = window("acquirer", 40, probe="tcp", target="acq.example:443")
    v = decide(probes=(*healthy_store(), acq))
    assert (v.cause, v.confidence) == (Cause.ACQUIRER_PATH, 0.8)
    assert ids(v)[0] == acq.ref.event_id
    assert "isp probe" in v.evidence[1].what and "healthy" in v.evidence[1].what


def test_another_acquirers_probe_failing_says_nothing_about_this_payment() -> None:
    other = window("acquirer", 40, probe="tcp", acquirer="OTHER")
    assert decide(probes=(*healthy_store(), other)).cause is Cause.UNKNOWN


def test_a_technical_code_with_a_healthy_network_is_acquirer_outage() -> None:
    t = txn(outcome="declined", response_code="91", technical=True)
    v = decide(t, probes=tuple(healthy_store()))
    assert (v.cause, v.confidence) == (Cause.ACQUIRER_OUTAGE, 0.5)
    assert v.evidence[0].event_id == "agent-T-1:10000"
    assert "technical response code 91" in v.evidence[0].what
    assert decide(t).confidence == 0.4  # no network evidence either way


def test_no_evidence_is_unknown_never_a_guess() -> None:
    v = decide(probes=tuple(healthy_store()), hosts=(host(40),))
    assert v == Verdict(Cause.UNKNOWN, 0.0, (), v.action)
    assert "No evidence explains" in v.action


# --- precedence, time and neighbours ------------------------------------------------------


def test_first_broken_hop_wins() -> None:
    link = window("link", 40, probe="link", error="link_down")
    gw = window("gateway", 40)
    isp = window("isp", 40)
    dns = window("dns", 40, probe="dns")
    acq = window("acquirer", 40, probe="tcp")
    ups = device("nut_ups", "fault", -10, 100, flags=("on_battery", "battery_low"))
    pad = device("ecr_pinpad", "fault", -10, 100)
    starved = host(40, mem=99.0)
    assert decide(probes=(acq, dns, isp, gw, link), devices=(pad, ups)).cause is Cause.POWER
    assert decide(probes=(acq, dns, isp, gw, link), devices=(pad,)).cause is Cause.DEVICE
    assert decide(probes=(acq, dns, isp, gw, link), hosts=(starved,)).cause is Cause.HOST
    assert decide(probes=(acq, dns, isp, gw, link)).cause is Cause.LINK
    assert decide(probes=(acq, dns, isp, gw)).cause is Cause.GATEWAY
    assert decide(probes=(acq, dns, isp)).cause is Cause.ISP
    assert decide(probes=(acq, dns)).cause is Cause.DNS
    assert decide(probes=(acq,)).cause is Cause.ACQUIRER_PATH


def test_a_gateway_that_failed_and_recovered_before_the_payment_is_not_blamed() -> None:
    probes = (
        change("gateway", -300, -240),  # failed 5 minutes before, recovered 4 minutes before
        window("gateway", -240),
        change("gateway", -240, 300, failing=False),
        window("gateway", -120, loss=0, error=None),
        window("gateway", -60, loss=0, error=None),
        window("gateway", 0, loss=0, error=None),
        window("gateway", 60, loss=0, error=None),
    )
    assert decide(probes=probes).cause is Cause.UNKNOWN


def test_a_failure_just_before_or_after_is_nearby_with_less_confidence() -> None:
    direct = decide(probes=(window("gateway", 20),))
    nearby = decide(probes=(window("gateway", -10, window_s=30),))  # ended 10 s before
    later = decide(probes=(change("gateway", 70, 300),))  # began 40 s after the timeout
    assert direct.confidence == 0.9
    assert (nearby.cause, nearby.confidence) == (Cause.GATEWAY, 0.7)
    assert (later.cause, later.confidence) == (Cause.GATEWAY, 0.7)


def test_the_change_that_began_the_streak_is_cited_first() -> None:
    began = change("isp", -20, 300)
    windows = (window("isp", 10), window("isp", 70))
    v = decide(probes=(*windows, began))
    assert ids(v)[0] == began.ref.event_id
    assert "started failing at 11:59:40 UTC: timeout" in v.evidence[0].what
    assert len(v.evidence) == 3


def test_store_neighbours_stand_in_for_a_role_this_terminal_does_not_probe() -> None:
    theirs = window("gateway", 40, terminal="T-2")
    v = decide(probes=(window("link", 40, loss=0, error=None, probe="link"), theirs))
    assert (v.cause, v.confidence) == (Cause.GATEWAY, 0.75)
    assert v.evidence[0].terminal_id == "T-2"
    assert v.evidence[0].what.startswith("terminal T-2 of the same store: gateway probe")


def test_own_probe_of_a_role_beats_the_neighbours() -> None:
    mine = window("gateway", 40, loss=0, error=None)
    theirs = window("gateway", 40, terminal="T-2")
    assert decide(probes=(mine, theirs)).cause is Cause.UNKNOWN


def test_a_neighbours_link_is_not_this_terminals_link() -> None:
    theirs = window("link", 40, probe="link", error="link_down", terminal="T-2")
    assert decide(probes=(theirs,)).cause is Cause.UNKNOWN


def test_confidence_orders_direct_nearby_neighbour() -> None:
    direct = decide(probes=(window("isp", 20),)).confidence
    neighbour = decide(probes=(window("isp", 20, terminal="T-2"),)).confidence
    nearby_neighbour = decide(probes=(window("isp", -10, terminal="T-2"),)).confidence
    nearby = decide(probes=(window("isp", -10),)).confidence
    assert direct > neighbour > nearby_neighbour
    assert direct > nearby > nearby_neighbour


def test_an_in_doubt_payment_is_told_to_verify_before_charging_again() -> None:
    for obs in ({}, {"probes": (window("isp", 20),)}):
        v = decide(txn(in_doubt=True), **obs)
        assert v.action.startswith(IN_DOUBT_ACTION)
        assert len(v.action) > len(IN_DOUBT_ACTION) + 10
    assert not decide(txn(in_doubt=False)).action.startswith(IN_DOUBT_ACTION)


def test_a_payment_without_a_start_is_judged_at_its_end() -> None:
    t = txn(started_at=None)
    assert decide(t, probes=(window("gateway", 45, window_s=10),)).cause is Cause.GATEWAY
    assert decide(t, probes=(change("gateway", -200, -100),)).cause is Cause.UNKNOWN


def test_one_internet_anchor_down_while_another_answers_is_not_the_isp() -> None:
    fine = (window("link", 20, probe="link", loss=0), window("gateway", 20, loss=0))
    one_down = (
        *fine,
        window("isp", 20, target="1.1.1.1"),
        window("isp", 20, target="9.9.9.9", loss=0),
    )
    assert decide(probes=one_down).cause is not Cause.ISP
    both_down = (*fine, window("isp", 20, target="1.1.1.1"), window("isp", 20, target="9.9.9.9"))
    assert decide(probes=both_down).cause is Cause.ISP
