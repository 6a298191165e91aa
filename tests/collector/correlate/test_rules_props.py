"""The fleet rule (decide_fleet), and properties of decide_local over any observations."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from collector.correlate.evidence import (
    AgentStart,
    DeviceSpan,
    FleetPeers,
    HostObs,
    Observations,
    PeerFailure,
    ProbeSpan,
    Ref,
)
from collector.correlate.model import IN_DOUBT_ACTION, event_id
from collector.correlate.rules import decide_fleet, decide_local, fleet_confidence
from collector.settings import AttributionSettings
from protocol.causes import Cause
from tests.collector.correlate.test_rules import S, at, decide, healthy_store, txn, window

# --- decide_fleet -------------------------------------------------------------------------


def peer(store: str, seconds: float, cause: str = "unknown", acquirer: str = "ACQ") -> PeerFailure:
    terminal = f"{store}-T1"
    ref = Ref(event_id(f"agent-{terminal}", 7), "txn", at(seconds), terminal)
    return PeerFailure(ref, store, f"tx-{store}", acquirer, "timeout", cause)


def peers(*items: PeerFailure) -> FleetPeers:
    return FleetPeers("ACQ", items)


def test_three_stores_failing_one_acquirer_is_an_acquirer_outage() -> None:
    acq = window("acquirer", 40, probe="tcp")
    local = decide(probes=(*healthy_store(), acq))
    assert local.cause is Cause.ACQUIRER_PATH
    v = decide_fleet(txn(), local, peers(peer("S-2", 10), peer("S-3", -100, "acquirer_path")), S)
    assert (v.cause, v.confidence) == (Cause.ACQUIRER_OUTAGE, 0.7)
    cited = [e.event_id for e in v.evidence]
    assert cited[0] == acq.ref.event_id  # this terminal's acquirer probe first
    assert cited[-2:] == ["agent-S-2-T1:7", "agent-S-3-T1:7"]
    assert "store S-2: payment tx-S-2 to ACQ timeout" in v.evidence[-2].what
    assert v.action.startswith("The acquirer was failing")


def test_two_stores_are_not_enough_the_local_verdict_stands() -> None:
    local = decide()
    seen = peer("S-2", 10, "acquirer_path")
    assert decide_fleet(txn(), local, peers(seen, peer("S-3", 20, "acquirer_path")), S).cause is (
        Cause.ACQUIRER_OUTAGE
    )
    assert decide_fleet(txn(), local, peers(seen), S) is local
    two = AttributionSettings(fleet_min_stores=2, fleet_min_acquirer_evidence=1)
    assert decide_fleet(txn(), local, peers(seen), two).cause is Cause.ACQUIRER_OUTAGE


def test_failures_that_nothing_explains_alone_are_not_an_outage() -> None:
    # isolated timeouts happen everywhere; in a big fleet some always fall together
    local = decide()
    assert local.cause is Cause.UNKNOWN
    unexplained = peers(*(peer(f"S-{i}", i) for i in range(2, 12)))
    assert decide_fleet(txn(), local, unexplained, S) is local
    one_seen = peers(peer("S-2", 5, "acquirer_path"), *(peer(f"S-{i}", i) for i in range(3, 6)))
    assert decide_fleet(txn(), local, one_seen, S) is local
    # two stores that saw the acquirer fail: the unexplained failures beside them count too
    two_seen = peers(peer("S-2", 5, "acquirer_path"), peer("S-3", 9, "acquirer_outage"))
    assert decide_fleet(txn(), local, two_seen, S).cause is Cause.ACQUIRER_OUTAGE


def test_stores_whose_own_network_explains_their_failures_do_not_count() -> None:
    local = decide()
    others = peers(peer("S-2", 10, "isp"), peer("S-3", 10, "gateway"), peer("S-4", 0, "power"))
    assert decide_fleet(txn(), local, others, S) is local


def test_the_same_store_twice_counts_once_and_another_acquirer_not_at_all() -> None:
    local = decide()
    others = peers(peer("S-2", 10), peer("S-2", 20), peer("S-1", 5), peer("S-3", 0, acquirer="X"))
    assert decide_fleet(txn(), local, others, S) is local


def test_a_store_with_its_own_isp_down_is_never_turned_into_an_outage() -> None:
    local = decide(probes=(window("isp", 20),))
    assert local.cause is Cause.ISP
    many = peers(*(peer(f"S-{i}", i) for i in range(2, 12)))
    assert decide_fleet(txn(), local, many, S) is local


def test_a_payment_naming_no_acquirer_keeps_its_local_verdict() -> None:
    local = decide()
    assert (
        decide_fleet(txn(acquirer=None), local, peers(peer("S-2", 1), peer("S-3", 2)), S) is local
    )


def test_fleet_confidence_rises_with_the_number_of_stores() -> None:
    local = decide(txn(in_doubt=True))
    found = []
    for n in range(3, 9):
        others = peers(*(peer(f"S-{i}", i, "acquirer_path") for i in range(2, n + 1)))
        v = decide_fleet(txn(in_doubt=True), local, others, S)
        assert v.action.startswith(IN_DOUBT_ACTION)
        found.append(v.confidence)
    assert found == sorted(found) and found[0] < found[-1] <= 0.95
    assert found[0] == fleet_confidence(3, S)


# --- any observations -> exactly one verdict, well-formed ----------------------------------

ROLES = ("link", "gateway", "isp", "dns", "acquirer", "collector")
ERRORS = (None, "timeout", "unreachable", "dns", "servfail", "link_down", "tls_expired",
          "tls_not_yet_valid", "clock_offset", "refused")  # fmt: skip
TERMINALS = ("T-1", "T-1", "T-2")
seconds = st.integers(min_value=-600, max_value=600)
_ids = st.integers(min_value=1, max_value=10**9)


@st.composite
def refs(draw: st.DrawFn, kind: str) -> Ref:
    terminal = draw(st.sampled_from(TERMINALS))
    return Ref(f"{terminal}:{draw(_ids)}", kind, at(draw(seconds)), terminal)


@st.composite
def probe_spans(draw: st.DrawFn) -> ProbeSpan:
    ref = draw(refs(draw(st.sampled_from(("probe_window", "probe_change")))))
    start = at(draw(seconds))
    error = draw(st.sampled_from(ERRORS))
    is_window = ref.kind == "probe_window"
    return ProbeSpan(
        ref=ref,
        probe=draw(st.sampled_from(("icmp", "tcp", "tls", "dns", "ntp", "link", "wifi"))),
        target=draw(st.sampled_from(("a", "b", "c"))),
        role=draw(st.sampled_from(ROLES)),
        acquirer=draw(st.sampled_from((None, "ACQ", "OTHER"))),
        start=start,
        end=start + timedelta(seconds=draw(st.integers(0, 900))),
        failing=draw(st.booleans()),
        error=error,
        errors=(error,) if error else (),
        loss_pct=draw(st.floats(0, 100)) if is_window else None,
        window_s=60.0 if is_window else None,
        clock_offset_ms=draw(st.none() | st.floats(-1e6, 1e6)),
    )


@st.composite
def device_spans(draw: st.DrawFn) -> DeviceSpan:
    start = at(draw(seconds))
    return DeviceSpan(
        ref=draw(refs("device_status")),
        device="d",
        device_kind=draw(st.sampled_from(("ecr_pinpad", "escpos_printer", "nut_ups", "at_modem"))),
        state=draw(st.sampled_from(("ok", "warning", "fault", "disconnected"))),
        flags=tuple(draw(st.lists(st.sampled_from(
            ("on_battery", "battery_low", "paper_end", "no_sim", "weak_signal")), max_size=3))),
        reason=None,
        start=start,
        end=start + timedelta(seconds=draw(st.integers(0, 900))),
    )  # fmt: skip


@st.composite
def hosts(draw: st.DrawFn) -> HostObs:
    ref = draw(refs("host_sample"))
    pct = st.floats(0, 100)
    return HostObs(
        ref=ref,
        start=ref.ts - timedelta(seconds=60),
        end=ref.ts,
        cpu_pct=draw(pct),
        mem_pct=draw(pct),
        disk_pct=draw(pct),
        boot_time=at(draw(seconds)),
    )


starts = st.builds(AgentStart, refs("agent_event"), st.booleans())
observations = st.builds(
    Observations,
    probes=st.lists(probe_spans(), max_size=12).map(tuple),
    devices=st.lists(device_spans(), max_size=4).map(tuple),
    hosts=st.lists(hosts(), max_size=4).map(tuple),
    starts=st.lists(starts, max_size=2).map(tuple),
    recorded_after=st.none() | starts,
)


@hsettings(max_examples=300, deadline=None)
@given(
    obs=observations,
    in_doubt=st.booleans(),
    technical=st.booleans(),
    started=st.none() | seconds,
)
def test_any_observations_give_one_well_formed_verdict(
    obs: Observations, in_doubt: bool, technical: bool, started: int | None
) -> None:
    t = txn(
        in_doubt=in_doubt, technical=technical, started_at=None if started is None else at(started)
    )
    v = decide_local(t, obs, S)
    assert isinstance(v.cause, Cause)
    assert 0.0 <= v.confidence <= 1.0
    allowed = obs.refs() | {event_id(t.agent_id, t.seq)}
    assert {e.event_id for e in v.evidence} <= allowed
    assert len({e.event_id for e in v.evidence}) == len(v.evidence)
    assert all(e.what for e in v.evidence)
    assert (v.cause is Cause.UNKNOWN) == (v.confidence == 0.0)
    assert (v.cause is Cause.UNKNOWN) <= (v.evidence == ())
    assert v.action.startswith(IN_DOUBT_ACTION) == in_doubt
    # the fleet rule only ever keeps the verdict or names an acquirer outage
    others = FleetPeers("ACQ", tuple(peer(f"S-{i}", i) for i in range(2, 5)))
    fleet = decide_fleet(t, v, others, S)
    assert fleet is v or fleet.cause is Cause.ACQUIRER_OUTAGE
    assert 0.0 <= fleet.confidence <= 1.0
