"""One simulated agent: what a real posmon-agent on a till would record, in simulated time.

A :class:`TerminalSim` keeps a queue of due actions (probe attempts every
10 s, probe windows every 60 s, host samples every 60 s, device polls every
10 s, payments at the terminal's rate, uploads every ``upload_interval_s``)
and runs them in time order up to the time asked (:meth:`advance`). It
reuses the agent's own pieces where they are pure — the probe window
arithmetic (:class:`agent.probes.window.Window`) and the healthy/failing
debounce (:class:`agent.probes.scheduler.Debounce`, fail after 3, recover
after 2) — so windows and flips look exactly like the real agent's.

Events get their ``seq`` when recorded (strictly increasing per agent) and
wait in the spool; an upload moves them into reports of at most 500 events,
unless the store's WAN is down (:func:`.faults.uploads_blocked`): then they
stay and go out as a backlog once it is back. A power cut stops the agent:
nothing is recorded while the store is dark; on return the host's
``boot_time`` is the restore time, the agent records ``start``, and the
payments that were open at the cut are recorded as timeouts dated at their
deadline.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, cast

from agent.probes.base import ProbeResult
from agent.probes.scheduler import Debounce
from agent.probes.window import Window
from protocol import AgentEvent, AgentInfo, DeviceStatus, Event, HostSample, ProbeChange, Report
from protocol.events import Role
from protocol.fields import Scalar

from . import faults as fx
from .noise import TerminalNoise
from .payments import make_payment
from .plan import Fault, Plan
from .records import PaymentRecord, Pending, utc

PROBE_INTERVAL_S: Final = 10.0
WINDOW_S: Final = 60.0
HOST_INTERVAL_S: Final = 60.0
DEVICE_INTERVAL_S: Final = 10.0
HEARTBEAT_S: Final = 300.0
BATCH_MAX_EVENTS: Final = 500
#: After power returns: the host boots this long, then the agent starts.
BOOT_S: Final = 25.0
COLLECTOR_ADDRESS: Final = "10.20.0.10:8780"
GIB: Final = 1024**3


def probe_defs(acquirers: Sequence[str], *, wifi: bool) -> list[fx.ProbeDef]:
    """The probes of one simulated agent (the README lists them)."""
    defs = [fx.ProbeDef("link", "link", "wlan0" if wifi else "eth0", "link")]
    if wifi:
        defs.append(fx.ProbeDef("wifi", "wifi", "wlan0", "link"))
    defs += [
        fx.ProbeDef("gateway", "icmp", "gateway", "gateway", rtt_ms=1.5),
        fx.ProbeDef("resolver", "dns", f"pay.{acquirers[0]}.example@system", "dns", rtt_ms=12.0),
        fx.ProbeDef("anchor-quad9", "icmp", "9.9.9.9", "isp", rtt_ms=18.0),
        fx.ProbeDef("anchor-cloudflare", "icmp", "1.1.1.1", "isp", rtt_ms=16.0),
        fx.ProbeDef("ntp", "ntp", "pool.ntp.org", "isp", rtt_ms=25.0),
    ]
    defs += [
        fx.ProbeDef(name, "tls", f"pay.{name}.example:443", "acquirer", acquirer=name, rtt_ms=70.0)
        for name in acquirers
    ]
    defs.append(
        fx.ProbeDef(
            "collector", "http", f"http://{COLLECTOR_ADDRESS}/healthz", "collector", rtt_ms=30.0
        )
    )
    return defs


class _ProbeRun:
    def __init__(self, spec: fx.ProbeDef) -> None:
        self.spec = spec
        self.window = Window()
        self.debounce = Debounce(3, 2)


class TerminalSim:
    """One terminal's agent, POS and peripherals in simulated time."""

    def __init__(
        self, plan: Plan, store: str, terminal: str, *, run_id: str, seed: int, version: str
    ) -> None:
        scenario = plan.scenario
        self.plan = plan
        self.store = store
        self.terminal = terminal
        self.run_id = run_id
        self.rng = random.Random(f"{seed}:{terminal}")
        self.noise = TerminalNoise(
            scenario.noise, plan, store, terminal, random.Random(f"{seed}:{terminal}:noise")
        )
        agent_id = f"sim-{run_id}-{terminal}".lower()
        self.info = AgentInfo(id=agent_id, terminal_id=terminal, store_id=store, version=version)
        self.faults = plan.faults_of(store, terminal)
        self.probes = [
            _ProbeRun(p) for p in probe_defs(scenario.acquirers, wifi=store in plan.wifi_stores)
        ]
        self.seq = 0
        self.spool: list[Event] = []
        self.outbox: list[Report] = []
        self.payments: list[PaymentRecord] = []
        self.rate_per_s = self.rng.uniform(*scenario.payments_per_hour) / 3600.0
        self.timeout_s = float(scenario.payment_timeout_s)
        self.n_payments = 0
        self.boot_time = plan.start.timestamp() - self.rng.uniform(2, 30) * 86400
        self.devices: dict[str, tuple[fx.DeviceReading, float] | None] = {}
        self.pending: list[Pending] = []
        self._queue: list[tuple[float, int, str, Any]] = []
        self._order = 0
        self.now = plan.start.timestamp()
        self._down = False
        self._schedule_start(self.now)
        for fault in self.faults:
            if fault.kind == "power_cut":
                self._push(fault.end.timestamp() + BOOT_S, "restart", fault)
                cut = fault.dark_start.timestamp()
                self._push(cut - self.rng.uniform(2.0, 5.0), "forced", fault)
        self._push(self.now + self.rng.uniform(0, scenario.upload_interval_s), "upload", None)

    # -- the queue ------------------------------------------------------------

    def _push(self, at: float, action: str, arg: Any) -> None:
        self._order += 1
        heapq.heappush(self._queue, (at, self._order, action, arg))

    def _schedule_start(self, t: float) -> None:
        """The agent starts at ``t``: its record, then every periodic task."""
        self._record(
            t,
            AgentEvent(
                seq=0,
                ts=utc(t),
                event="start",
                details={
                    "version": self.info.version,
                    "pid": self.rng.randint(300, 30000),
                    "config": "/etc/posmon/agent.toml",
                    "previous_stop": "clean" if t == self.plan.start.timestamp() else "unclean",
                },
            ),
        )
        for i in range(len(self.probes)):
            self._push(t + self.rng.uniform(0, PROBE_INTERVAL_S), "attempt", i)
        self._push(t + WINDOW_S, "window", None)
        self._push(t + self.rng.uniform(1, HOST_INTERVAL_S), "host", None)
        self._push(t + self.rng.uniform(0, 2), "devices", None)
        self._push(
            t + self.rng.expovariate(self.rate_per_s) if self.rate_per_s else 1e18, "payment", None
        )
        lossy_in = self.noise.next_lossy_in()
        if lossy_in is not None:
            self._push(t + lossy_in, "lossy", None)

    def advance(self, until: datetime) -> None:
        """Run every action due up to ``until`` (inclusive)."""
        end = until.timestamp()
        queue = self._queue
        while queue and queue[0][0] <= end:
            at, _, action, arg = heapq.heappop(queue)
            self.now = at
            self._run(at, action, arg)
        self.now = max(self.now, end)

    def _run(self, t: float, action: str, arg: Any) -> None:
        if action == "restart":
            self._restart(t, arg)
            return
        if action == "end":
            self._end(t, arg)
            return
        if self._down or fx.agent_down(self.faults, utc(t)):
            self._go_down(t)
            return  # periodic tasks stop; restart schedules them again
        getattr(self, f"_{action}")(t, arg)

    # -- power ----------------------------------------------------------------

    def _go_down(self, t: float) -> None:
        self._down = True

    def _restart(self, t: float, fault: Fault) -> None:
        self._down = False
        self._queue[:] = [q for q in self._queue if q[2] in ("restart", "end")]
        heapq.heapify(self._queue)
        self.boot_time = fault.end.timestamp()
        self.probes = [_ProbeRun(p.spec) for p in self.probes]
        self.devices = {}
        self._schedule_start(t)
        # payments open when the power went: recorded now, as timeouts at their deadline
        for pending in sorted(self.pending, key=lambda p: p.event.ts):
            self._record(t, pending.event)
            self.payments.append(pending.record)
        self.pending = []
        self._push(t + self.rng.uniform(1, self.plan.scenario.upload_interval_s), "upload", None)

    # -- recording and uploads ------------------------------------------------

    def _record(self, t: float, event: Event) -> None:
        del t
        self.seq += 1
        self.spool.append(dataclasses.replace(event, seq=self.seq))

    def _upload(self, t: float, arg: Any) -> None:
        self._push(t + self.plan.scenario.upload_interval_s, "upload", None)
        if fx.uploads_blocked(self.faults, utc(t)):
            return
        self.flush(t)

    def flush(self, t: float) -> None:
        """Move everything spooled into reports (batches of at most 500 events)."""
        while self.spool:
            batch, self.spool = self.spool[:BATCH_MAX_EVENTS], self.spool[BATCH_MAX_EVENTS:]
            report = _report(self.info, utc(t), batch, backlog=len(self.spool))
            self.outbox.append(report)
            if self.noise.duplicate():  # the acknowledgement was lost: the agent sends it again
                self.outbox.append(report)

    def take_reports(self) -> list[Report]:
        out, self.outbox = self.outbox, []
        return out

    # -- probes ---------------------------------------------------------------

    def _attempt(self, t: float, index: int) -> None:
        self._push(t + PROBE_INTERVAL_S, "attempt", index)
        run = self.probes[index]
        spec = run.spec
        at = utc(t)
        effect = None
        for fault in fx.active(self.faults, at):
            effect = fx.attempt_effect(spec, fault) or effect
        rng = self.rng
        extras: dict[str, Scalar] = _base_extras(spec, rng)
        base_offset = extras.get("clock_offset_ms")
        if isinstance(base_offset, float):
            extras["clock_offset_ms"] = self.noise.ntp_offset_ms(base_offset)
        if effect is not None:
            extras.update(effect.extras)
        if effect is not None and rng.random() < effect.fail_p:
            result = ProbeResult(ok=False, error=rng.choice(effect.errors), extras=extras)
        else:
            rtt = None
            if spec.rtt_ms is not None:
                factor = effect.rtt_factor if effect is not None else 1.0
                rtt = spec.rtt_ms * factor * rng.lognormvariate(0, 0.25)
                rtt *= self.noise.rtt_factor(spec)
            result = ProbeResult(ok=True, rtt_ms=rtt, extras=extras)
            if self.noise.attempt_lost(index):
                result = ProbeResult(ok=False, error=self.noise.error_of(spec), extras=extras)
        run.window.add(result)
        flip = run.debounce.feed(result.ok, result.error, at)
        if flip is not None:
            self._record(
                t,
                ProbeChange(
                    seq=0, ts=flip.since, probe=spec.type, target=spec.target,
                    role=cast(Role, spec.role), acquirer=spec.acquirer, state=flip.state,
                    error=flip.error,
                ),
            )  # fmt: skip

    def _lossy(self, t: float, arg: Any) -> None:
        """Noise: one probe loses some attempts of its next window."""
        lossy_in = self.noise.next_lossy_in()
        if lossy_in is not None:
            self._push(t + lossy_in, "lossy", None)
        self.noise.start_lossy(len(self.probes))

    def _window(self, t: float, arg: Any) -> None:
        self._push(t + WINDOW_S, "window", None)
        for run in self.probes:
            if run.window.sent == 0:
                continue
            spec = run.spec
            event = run.window.to_event(
                utc(t), probe=spec.type, target=spec.target, role=cast(Role, spec.role),
                acquirer=spec.acquirer, window_s=WINDOW_S,
            )  # fmt: skip
            self._record(t, event)
            run.window = Window()

    # -- host and devices -----------------------------------------------------

    def _host(self, t: float, arg: Any) -> None:
        self._push(t + HOST_INTERVAL_S, "host", None)
        rng = self.rng
        if fx.host_starved(self.faults, utc(t)):
            cpu, mem, load = rng.uniform(97, 100), rng.uniform(96, 98.5), rng.uniform(6, 11)
        else:
            cpu, mem, load = rng.uniform(3, 25), rng.uniform(38, 60), rng.uniform(0.1, 0.9)
            spike = self.noise.cpu_spike()
            if spike is not None:
                cpu, load = spike, load + 2.5
        self._record(
            t,
            HostSample(
                seq=0, ts=utc(t), cpu_pct=round(cpu, 1), mem_pct=round(mem, 1),
                mem_available_bytes=int(8 * GIB * (100 - mem) / 100), disk_pct=41.5,
                disk_free_bytes=int(70 * GIB), load1=round(load, 2),
                load5=round(load * 0.9, 2), load15=round(load * 0.8, 2),
                uptime_s=max(0.0, t - self.boot_time), boot_time=utc(self.boot_time),
            ),
        )  # fmt: skip

    def _devices(self, t: float, arg: Any) -> None:
        self._push(t + DEVICE_INTERVAL_S, "devices", None)
        at = utc(t)
        readings = {
            "pinpad": ("ecr_pinpad", fx.pinpad_reading(self.faults, at)),
            "printer": ("escpos_printer", self.noise.printer(at)),
            "ups": ("megatec_ups", fx.ups_reading(self.faults, at)),
        }
        for name, (kind, reading) in readings.items():
            last = self.devices.get(name)
            changed = last is None or last[0] != reading
            if not changed and last is not None and t - last[1] < HEARTBEAT_S:
                continue
            self.devices[name] = (reading, t)
            self._record(
                t,
                DeviceStatus(
                    seq=0, ts=at, device=name, device_kind=kind, state=reading.state,  # type: ignore[arg-type]
                    flags=reading.flags, attributes=_attributes(name, reading, self.rng),
                    reason=reading.reason, heartbeat=not changed,
                ),
            )  # fmt: skip

    # -- payments -------------------------------------------------------------

    def _payment(self, t: float, arg: Any) -> None:
        self._push(t + self.rng.expovariate(self.rate_per_s), "payment", None)
        pending, end_at = make_payment(self, t)
        self._push(end_at, "end", pending)

    def _forced(self, t: float, cut: Fault) -> None:
        """A payment in progress when a power cut takes the store dark."""
        pending, end_at = make_payment(self, t, open_at_cut=cut)
        self._push(end_at, "end", pending)

    def _end(self, t: float, pending: Pending) -> None:
        if self._down or fx.agent_down(self.faults, utc(t)):
            self.pending.append(pending)  # the agent records it when it is back
            return
        self._record(t, pending.event)
        self.payments.append(pending.record)


def _base_extras(spec: fx.ProbeDef, rng: random.Random) -> dict[str, Scalar]:
    if spec.type == "ntp":
        return {"clock_offset_ms": round(rng.gauss(0, 4), 3), "stratum": 2}
    if spec.type == "wifi":
        return {"signal_dbm": rng.randint(-62, -50)}
    if spec.type == "tls":
        return {"tls_version": "TLSv1.3", "cert_days_left": 211.4}
    if spec.type == "link":
        return {"interface": spec.target, "speed_mbps": 1000}
    return {}


def _attributes(name: str, reading: fx.DeviceReading, rng: random.Random) -> dict[str, Scalar]:
    if name == "pinpad":
        if reading.state == "disconnected":
            return {}
        return {"mode": "presence", "usb_id": "0b00:0080", "device_node": "/dev/ttyACM0"}
    if name == "printer":
        return {"status_bytes": "16 12 12 12", "paper_feeding": False, "error_occurred": False}
    on_battery = "on_battery" in reading.flags
    return {
        "input_voltage": 0.0 if on_battery else round(rng.uniform(226, 234), 1),
        "output_voltage": round(rng.uniform(228, 231), 1),
        "load_pct": rng.randint(15, 30),
        "frequency_hz": 50.0,
        "battery_voltage": round(rng.uniform(24.5, 25.5) if on_battery else 27.4, 2),
        "temperature_c": 25.0,
        "ups_type": "standby",
        "beeper": True,
    }


_REPORT_FIELDS: Final = {f.name for f in dataclasses.fields(Report)}


def _report(info: AgentInfo, sent_at: datetime, events: list[Event], *, backlog: int) -> Report:
    extra: dict[str, Any] = {"backlog": backlog} if "backlog" in _REPORT_FIELDS else {}
    return Report(agent=info, sent_at=sent_at, events=tuple(events), **extra)
