"""The evidence reader and the verdicts on a real SQLite file, fed through storage.ingest.

Each test stores real reports (protocol types, validated by the wire path the
collector uses) with SqliteStorage, adds the txns rows the way the correlator
does, and asks local_verdict / final_verdict.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from collector.correlate.attribute import final_verdict, local_verdict
from collector.correlate.evidence import observations
from collector.correlate.model import TxnRow, Verdict
from collector.settings import AttributionSettings
from collector.storage.base import TokenInfo
from collector.storage.sqlite import SqliteStorage
from protocol import (
    AgentEvent,
    AgentInfo,
    DeviceStatus,
    Event,
    HostSample,
    ProbeChange,
    ProbeWindow,
    Report,
    Txn,
    format_datetime,
)
from protocol.causes import Cause
from protocol.fastwire import wire_report

T = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)  # payments start here
S = AttributionSettings()
BOOT = T - timedelta(days=3)


def at(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


class Till:
    """One terminal's agent: builds its events with increasing seqs and stores them."""

    def __init__(self, storage: SqliteStorage, terminal: str, store: str) -> None:
        self.storage = storage
        self.info = AgentInfo(id=f"agent-{terminal}", terminal_id=terminal, store_id=store,
                              version="0.1.0")  # fmt: skip
        self.token = TokenInfo("agent", terminal_id=terminal, store_id=store)
        self.seq = 0
        self.txns: dict[str, Txn] = {}

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def window(self, role: str, end: float, *, loss: float = 0.0, error: str = "timeout",
               probe: str = "icmp", target: str | None = None, acquirer: str | None = None,
               **extras: Any) -> ProbeWindow:  # fmt: skip
        sent = 20
        ok = round(sent * (100 - loss) / 100)
        return ProbeWindow(
            seq=self.next_seq(), ts=at(end), probe=probe, target=target or f"{role}.example",
            role=role, acquirer=acquirer or ("ACQ" if role == "acquirer" else None),  # type: ignore[arg-type]
            window_s=60.0, sent=sent, ok=ok, loss_pct=100 * (sent - ok) / sent,
            errors={error: sent - ok} if ok < sent else {}, extras=extras,
        )  # fmt: skip

    def change(
        self, role: str, ts: float, state: str, error: str | None = "timeout"
    ) -> ProbeChange:
        return ProbeChange(
            seq=self.next_seq(), ts=at(ts), probe="icmp", target=f"{role}.example",
            role=role, state=state, error=error if state == "fail" else None,  # type: ignore[arg-type]
        )  # fmt: skip

    def healthy(self, *roles: str, until: float = 180) -> list[Event]:
        """A healthy window per role every minute from five minutes before the payment."""
        return [self.window(r, end) for end in range(-300, int(until) + 1, 60) for r in roles]

    def host(self, ts: float, *, cpu: float = 10.0, boot: datetime = BOOT) -> HostSample:
        return HostSample(
            seq=self.next_seq(), ts=at(ts), cpu_pct=cpu, mem_pct=40.0, mem_available_bytes=1,
            disk_pct=50.0, disk_free_bytes=1, load1=0.1, load5=0.1, load15=0.1,
            uptime_s=(at(ts) - boot).total_seconds(), boot_time=boot,
        )  # fmt: skip

    def payment(self, txn_id: str, start: float = 0, end: float = 30, *, acquirer: str = "ACQ",
                **kw: Any) -> Txn:  # fmt: skip
        fields: dict[str, Any] = {"outcome": "timeout", "in_doubt": True}
        fields.update(kw)
        event = Txn(seq=self.next_seq(), ts=at(end), txn_id=txn_id, acquirer=acquirer,
                    started_at=at(start), **fields)  # fmt: skip
        self.txns[txn_id] = event
        return event

    async def send(self, *events: Event) -> None:
        report = Report(agent=self.info, sent_at=at(600), events=tuple(events))
        await self.storage.ingest(self.token, wire_report(report))

    def row(self, txn_id: str) -> TxnRow:
        t = self.txns[txn_id]
        return TxnRow(
            terminal_id=self.info.terminal_id, store_id=self.info.store_id, txn_id=t.txn_id,
            agent_id=self.info.id, seq=t.seq, ts=t.ts, started_at=t.started_at,
            acquirer=t.acquirer, outcome=t.outcome, response_code=t.response_code,
            technical=t.technical, in_doubt=t.in_doubt,
        )  # fmt: skip

    async def local(self, txn_id: str) -> Verdict:
        row = self.row(txn_id)
        return await self.storage.writer.read(lambda conn: local_verdict(conn, row, S))

    async def attribute(self, txn_id: str) -> Verdict:
        """Local verdict stored in txns (as the service does), then the final verdict."""
        row = self.row(txn_id)
        local = await self.local(txn_id)
        await self.storage.writer.write(lambda conn: insert_txn(conn, row, local))
        return await self.storage.writer.read(lambda conn: final_verdict(conn, row, local, S))


def insert_txn(conn: Any, t: TxnRow, local: Verdict) -> None:
    """The txns row of a failed payment with its local cause (what the service writes)."""
    conn.execute(
        "INSERT INTO txns (terminal_id, txn_id, store_id, agent_id, seq, ts, started_at,"
        " txn_kind, acquirer, outcome, response_code, technical, in_doubt, late, failed,"
        " local_cause) VALUES (?, ?, ?, ?, ?, ?, ?, 'sale', ?, ?, ?, ?, ?, 0, 1, ?)",
        (t.terminal_id, t.txn_id, t.store_id, t.agent_id, t.seq, format_datetime(t.ts),
         None if t.started_at is None else format_datetime(t.started_at), t.acquirer,
         t.outcome, t.response_code, int(t.technical), int(t.in_doubt), str(local.cause)),
    )  # fmt: skip


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    store = SqliteStorage(str(tmp_path / "collector.db"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def stored_ids(storage: SqliteStorage) -> set[str]:
    rows = await storage.writer.read(
        lambda conn: conn.execute("SELECT agent_id, seq FROM events").fetchall()
    )
    return {f"{a}:{s}" for a, s in rows}


async def test_an_isp_outage_is_isp_citing_stored_events(storage: SqliteStorage) -> None:
    till = Till(storage, "T-1", "S-1")
    began = till.change("isp", -20, "fail")
    await till.send(
        *till.healthy("link", "gateway"),
        till.window("isp", -60),
        began,
        till.window("isp", 0, loss=35.0),  # a partial window is not failing by itself
        till.window("isp", 60, loss=100.0, target="isp.example"),
        till.payment("tx-1"),
    )
    v = await till.local("tx-1")
    assert (v.cause, v.confidence) == (Cause.ISP, 0.9)
    assert v.evidence[0].event_id == f"agent-T-1:{began.seq}"
    assert {e.event_id for e in v.evidence} <= await stored_ids(storage)
    assert all(e.terminal_id == "T-1" for e in v.evidence)


async def test_a_gateway_that_recovered_before_the_payment_is_not_blamed(
    storage: SqliteStorage,
) -> None:
    till = Till(storage, "T-1", "S-1")
    await till.send(
        till.change("gateway", -300, "fail"),
        till.window("gateway", -240, loss=100.0),
        till.change("gateway", -240, "ok"),
        *till.healthy("gateway", "isp")[2:],
        till.payment("tx-1"),
    )
    v = await till.local("tx-1")
    assert (v.cause, v.evidence) == (Cause.UNKNOWN, ())


async def test_a_failing_change_without_recovery_holds_through_the_payment(
    storage: SqliteStorage,
) -> None:
    till = Till(storage, "T-1", "S-1")
    change = till.change("gateway", -250, "fail", error="unreachable")
    await till.send(change, till.payment("tx-1"))
    obs = await storage.writer.read(lambda conn: observations(conn, till.row("tx-1"), S))
    (span,) = obs.probes
    assert (span.start, span.end, span.failing) == (at(-250), at(30 + S.after_s), True)
    assert (await till.local("tx-1")).cause is Cause.GATEWAY


async def test_store_neighbours_stand_in_and_other_stores_do_not(storage: SqliteStorage) -> None:
    mine = Till(storage, "T-1", "S-1")
    neighbour = Till(storage, "T-2", "S-1")
    elsewhere = Till(storage, "T-9", "S-9")
    await elsewhere.send(elsewhere.window("isp", 20, loss=100.0))
    await mine.send(*mine.healthy("link"), mine.payment("tx-1"))
    assert (await mine.local("tx-1")).cause is Cause.UNKNOWN

    failing = neighbour.window("gateway", 20, loss=100.0, target="192.168.1.1")
    await neighbour.send(failing, neighbour.window("link", 20, loss=100.0, error="link_down"))
    v = await mine.local("tx-1")
    assert (v.cause, v.confidence) == (Cause.GATEWAY, 0.75)  # not their link: that is theirs
    assert v.evidence[0].event_id == f"agent-T-2:{failing.seq}"
    assert v.evidence[0].what.startswith("terminal T-2 of the same store: gateway probe icmp")


async def test_power_cut_the_payment_recorded_after_the_reboot(storage: SqliteStorage) -> None:
    till = Till(storage, "T-1", "S-1")
    await till.send(till.host(-60), *till.healthy("gateway", "isp", until=0))
    # the power fails at +10 s; back at +400 s; the agent starts at +460 s and then
    # records the payment that was still open as a timeout dated at its deadline (+60 s)
    start = AgentEvent(seq=till.next_seq(), ts=at(460), event="start",
                       details={"previous_stop": "unclean"})  # fmt: skip
    payment = till.payment("tx-1", end=60)
    after = till.host(500, boot=at(430))
    await till.send(start, payment, after)
    v = await till.local("tx-1")
    assert (v.cause, v.confidence) == (Cause.POWER, 0.9)
    assert [e.event_id for e in v.evidence] == [f"agent-T-1:{after.seq}", f"agent-T-1:{start.seq}"]


async def test_an_agent_restart_without_a_reboot_is_not_power(storage: SqliteStorage) -> None:
    till = Till(storage, "T-1", "S-1")
    start = AgentEvent(seq=till.next_seq(), ts=at(100), event="start",
                       details={"previous_stop": "unclean"})  # fmt: skip
    await till.send(till.host(-60), start, till.payment("tx-1", end=60), till.host(150))
    assert (await till.local("tx-1")).cause is Cause.UNKNOWN


async def test_a_pinpad_unplugged_before_the_read_range_is_still_seen(
    storage: SqliteStorage,
) -> None:
    till = Till(storage, "T-1", "S-1")
    pad = DeviceStatus(seq=till.next_seq(), ts=at(-480), device="pinpad", device_kind="ecr_pinpad",
                       state="disconnected", reason="not found")  # fmt: skip
    printer = DeviceStatus(seq=till.next_seq(), ts=at(-30), device="printer",
                           device_kind="escpos_printer", state="fault",
                           flags=("paper_end",))  # fmt: skip
    await till.send(pad, printer, *till.healthy("gateway", "isp"), till.payment("tx-1"))
    v = await till.local("tx-1")
    assert (v.cause, v.confidence) == (Cause.DEVICE, 0.9)
    assert [e.event_id for e in v.evidence] == [f"agent-T-1:{pad.seq}"]
    assert v.evidence[0].what == "ecr_pinpad pinpad disconnected: not found"


async def test_clock_offset_from_ntp_windows(storage: SqliteStorage) -> None:
    till = Till(storage, "T-1", "S-1")
    ntp = till.window("isp", 20, loss=100.0, error="clock_offset", probe="ntp",
                      target="pool.ntp.org", clock_offset_ms=-3600000.0)  # fmt: skip
    await till.send(*till.healthy("gateway", "isp"), ntp, till.payment("tx-1"))
    v = await till.local("tx-1")
    assert v.cause is Cause.CLOCK
    assert v.evidence[0].what == "ntp probe pool.ntp.org: clock offset -3600000 ms (limit ±1000 ms)"


async def _stores(storage: SqliteStorage, n: int) -> list[Till]:
    """``n`` stores with healthy networks whose acquirer probe fails during their payment."""
    tills = []
    for i in range(1, n + 1):
        till = Till(storage, f"T-{i}", f"S-{i}")
        await till.send(
            *till.healthy("gateway", "isp", "dns"),
            till.window("acquirer", 60, loss=100.0, probe="tcp", target="acq.example:443"),
            till.payment("tx-1", start=10 * i, end=10 * i + 30),
        )
        tills.append(till)
    return tills


async def test_three_healthy_stores_failing_one_acquirer_is_an_outage(
    storage: SqliteStorage,
) -> None:
    first, second, third = await _stores(storage, 3)
    v1 = await first.attribute("tx-1")
    v2 = await second.attribute("tx-1")
    assert (v1.cause, v2.cause) == (Cause.ACQUIRER_PATH, Cause.ACQUIRER_PATH)  # not yet
    v3 = await third.attribute("tx-1")
    assert (v3.cause, v3.confidence) == (Cause.ACQUIRER_OUTAGE, 0.7)
    cited = [e.event_id for e in v3.evidence]
    assert f"agent-T-1:{first.txns['tx-1'].seq}" in cited
    assert f"agent-T-2:{second.txns['tx-1'].seq}" in cited
    assert cited[0].startswith("agent-T-3:")  # its own acquirer probe first
    # the first store, judged again now, sees the other two
    again = await storage.writer.read(lambda conn: final_verdict(conn, first.row("tx-1"), v1, S))
    assert again.cause is Cause.ACQUIRER_OUTAGE


async def test_one_stores_isp_outage_is_never_an_acquirer_outage(storage: SqliteStorage) -> None:
    healthy = await _stores(storage, 2)
    down = Till(storage, "T-8", "S-8")
    await down.send(
        *down.healthy("gateway"),
        down.window("isp", 60, loss=100.0),
        down.window("acquirer", 60, loss=100.0, probe="tcp"),
        down.payment("tx-1"),
        down.payment("tx-2", start=40, end=70),
    )
    for txn_id in ("tx-1", "tx-2"):
        assert (await down.attribute(txn_id)).cause is Cause.ISP
    for till in healthy:  # two healthy stores and one with its ISP down: no outage
        assert (await till.attribute("tx-1")).cause is Cause.ACQUIRER_PATH


async def test_failures_outside_the_fleet_window_do_not_count(storage: SqliteStorage) -> None:
    tills = await _stores(storage, 2)
    late = Till(storage, "T-7", "S-7")
    start = S.fleet_window_s + 120
    await late.send(late.payment("tx-1", start=start, end=start + 30))
    for till in (*tills, late):
        assert (await till.attribute("tx-1")).cause is not Cause.ACQUIRER_OUTAGE
