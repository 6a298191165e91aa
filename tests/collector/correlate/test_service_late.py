"""Late evidence that the rules find by more than its time: a device state read further
back, and the reboot that a power cut's payment was recorded after."""

from __future__ import annotations

from datetime import timedelta

from protocol import AgentEvent, HostSample
from tests.collector.correlate.servicekit import (
    Terminal,
    device,
    healthy_store,
    now_s,
    txn,
    txn_row,
    wait_caught_up,
)
from tests.helpers import CollectorProc

MIN = timedelta(minutes=1)


def test_a_late_pin_pad_state_from_before_the_read_window_revises_the_cause(
    collector: CollectorProc,
) -> None:
    db = collector.db_path
    t = now_s() - timedelta(minutes=40)
    till = Terminal(collector, "T-1", "S-1")
    till.post(*healthy_store(t - MIN), *healthy_store(t), txn(t, "p1", "error"))
    wait_caught_up(db)
    assert txn_row(db, "T-1", "p1")["cause"] == "unknown"

    # the PIN pad had been unplugged 8 minutes before (longer ago than before_s = 300 s,
    # but a state holds until the next one); its status reaches the collector only now
    till.post(device(t - 8 * MIN, "pinpad", "ecr_pinpad", "disconnected", reason="not found"))
    wait_caught_up(db)
    revised = txn_row(db, "T-1", "p1")
    assert revised["cause"] == "device"
    assert any(e["kind"] == "device_status" for e in revised["evidence"])


def test_the_reboot_after_a_power_cut_arriving_in_a_later_report_revises_the_cause(
    collector: CollectorProc,
) -> None:
    db = collector.db_path
    t = now_s() - timedelta(minutes=50)
    back = t + 20 * MIN  # power came back 20 minutes after the payment's deadline
    till = Terminal(collector, "T-1", "S-1")
    till.post(*healthy_store(t - 2 * MIN))
    # after the restart the agent records the payment left open as a timeout at its deadline
    till.post(
        AgentEvent(seq=0, ts=back, event="start", details={"clean": False}),
        txn(t, "p1", "timeout", started=t - MIN),
    )
    wait_caught_up(db)
    assert txn_row(db, "T-1", "p1")["cause"] == "unknown"  # a restart alone is not power

    # the first host sample after the start, sent in the next report, shows the reboot
    rebooted = HostSample(
        seq=0, ts=back + MIN, cpu_pct=5.0, mem_pct=30.0, mem_available_bytes=2**30,
        disk_pct=40.0, disk_free_bytes=2**34, load1=0.2, load5=0.2, load15=0.2,
        uptime_s=120.0, boot_time=back - MIN,
    )  # fmt: skip
    till.post(rebooted)
    wait_caught_up(db)
    assert txn_row(db, "T-1", "p1")["cause"] == "power"
