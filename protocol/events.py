"""The typed, immutable structures of wire protocol v1.

A report is ``{v, agent: {id, terminal_id, store_id, version}, sent_at,
events: [...], backlog}`` (``backlog``, optional, is a compatible extension
of v1: see :class:`Report`); every event carries ``seq`` (per agent, strictly
increasing, never reused), ``ts`` (UTC) and ``kind``.

Every type validates when built and raises :class:`ProtocolError` naming the
field. Lists become tuples and objects become read-only mappings, so a built
value never changes.

``seq`` 0 means "not yet assigned": the agent builds an event first and its
spool assigns the number. On the wire ``seq`` must be at least 1 (the codec
checks).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

import orjson

from .errors import ProtocolError
from .fields import FieldSpec, Scalar, bounds, normalise, parse_datetime, specs
from .version import VERSION, parse_version

Role = Literal["link", "gateway", "dns", "isp", "acquirer", "collector"]
ProbeState = Literal["ok", "fail"]
DeviceState = Literal["ok", "warning", "fault", "disconnected"]
TxnKind = Literal["sale", "refund", "void", "reversal"]
Outcome = Literal["approved", "declined", "timeout", "error"]
Resolution = Literal["reversed", "charged", "not_charged"]

ID = bounds(max_len=128)
NAME = bounds(max_len=256)
SEQ_MAX = 2**63 - 1
NONNEG = bounds(min=0)
PERCENT = bounds(min=0, max=100)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentInfo:
    """Who sent a report."""

    id: str = field(metadata=ID)
    terminal_id: str = field(metadata=ID)
    store_id: str = field(metadata=ID)
    version: str = field(metadata=bounds(max_len=64))

    def __post_init__(self) -> None:
        normalise(self)

    def _check(self) -> None:
        for name in ("id", "terminal_id", "store_id"):
            if not getattr(self, name):
                raise ProtocolError(f"{name}: must not be empty", field=name)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Fields every event has. Concrete kinds set ``KIND``."""

    KIND: ClassVar[str] = ""
    #: Which events the spool sheds first when full: 0 health, 1 state, 2 payments.
    PRIORITY: ClassVar[int] = 1

    seq: int = field(metadata=bounds(min=0, max=SEQ_MAX))
    ts: datetime

    def __post_init__(self) -> None:
        normalise(self)

    @property
    def kind(self) -> str:
        return self.KIND

    @property
    def priority(self) -> int:
        return self.PRIORITY


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeWindow(Event):
    """Statistics of one probe over one window."""

    KIND: ClassVar[str] = "probe_window"
    PRIORITY: ClassVar[int] = 0

    probe: str = field(metadata=bounds(max_len=32, doc="probe type: icmp, tcp, dns, ..."))
    target: str = field(metadata=NAME)
    role: Role
    acquirer: str | None = field(default=None, metadata=NAME)
    window_s: float = field(metadata=bounds(min=0))
    sent: int = field(metadata=NONNEG)
    ok: int = field(metadata=NONNEG)
    loss_pct: float = field(metadata=PERCENT)
    rtt_min_ms: float | None = field(default=None, metadata=NONNEG)
    rtt_avg_ms: float | None = field(default=None, metadata=NONNEG)
    rtt_p95_ms: float | None = field(default=None, metadata=NONNEG)
    rtt_max_ms: float | None = field(default=None, metadata=NONNEG)
    jitter_ms: float | None = field(default=None, metadata=NONNEG)
    errors: Mapping[str, int] = field(default_factory=dict)
    extras: Mapping[str, Scalar] = field(default_factory=dict)

    def _check(self) -> None:
        if self.ok > self.sent:
            raise ProtocolError("ok: cannot exceed sent", field="ok")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeChange(Event):
    """A probe flipped between healthy and failing."""

    KIND: ClassVar[str] = "probe_change"

    probe: str = field(metadata=bounds(max_len=32))
    target: str = field(metadata=NAME)
    role: Role
    acquirer: str | None = field(default=None, metadata=NAME)
    state: ProbeState
    error: str | None = field(default=None, metadata=bounds(max_len=64))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceStatus(Event):
    """A peripheral's state, on every change and as a heartbeat."""

    KIND: ClassVar[str] = "device_status"

    device: str = field(metadata=NAME)
    device_kind: str = field(metadata=bounds(max_len=64))
    state: DeviceState
    flags: tuple[str, ...] = ()
    attributes: Mapping[str, Scalar] = field(default_factory=dict)
    reason: str | None = field(default=None, metadata=bounds(max_len=512))
    heartbeat: bool = False

    @property
    def priority(self) -> int:
        return 0 if self.heartbeat else 1


@dataclass(frozen=True, slots=True, kw_only=True)
class HostSample(Event):
    """The POS host's resources over one window."""

    KIND: ClassVar[str] = "host_sample"
    PRIORITY: ClassVar[int] = 0

    cpu_pct: float = field(metadata=bounds(min=0, max=100 * 1024))
    mem_pct: float = field(metadata=PERCENT)
    mem_available_bytes: int = field(metadata=NONNEG)
    disk_pct: float = field(metadata=PERCENT)
    disk_free_bytes: int = field(metadata=NONNEG)
    load1: float = field(metadata=NONNEG)
    load5: float = field(metadata=NONNEG)
    load15: float = field(metadata=NONNEG)
    uptime_s: float = field(metadata=NONNEG)
    boot_time: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Txn(Event):
    """A payment that ended, or timed out. Never a card number."""

    KIND: ClassVar[str] = "txn"
    PRIORITY: ClassVar[int] = 2

    txn_id: str = field(metadata=ID)
    txn_kind: TxnKind = "sale"
    acquirer: str | None = field(default=None, metadata=NAME)
    outcome: Outcome
    response_code: str | None = field(default=None, metadata=bounds(max_len=8))
    latency_ms: float | None = field(default=None, metadata=NONNEG)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    stan: str | None = field(default=None, metadata=bounds(max_len=12))
    rrn: str | None = field(default=None, metadata=bounds(max_len=12))
    auth_code: str | None = field(default=None, metadata=bounds(max_len=12))
    amount_minor: int | None = field(default=None, metadata=NONNEG)
    currency: str | None = field(default=None, metadata=bounds(max_len=3))
    in_doubt: bool = False
    technical: bool = False
    message: str | None = field(default=None, metadata=bounds(max_len=512))
    #: the end arrived after the agent had already recorded the payment as a timeout
    late: bool = False
    #: how the POS cleared an in-doubt payment: reversed, charged or not_charged
    resolution: Resolution | None = None

    def _check(self) -> None:
        if self.currency is not None and not (
            len(self.currency) == 3 and self.currency.isascii() and self.currency.isupper()
        ):
            raise ProtocolError("currency: must be an ISO 4217 code like EUR", field="currency")


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentEvent(Event):
    """Something about the agent itself: start, stop, config change, clock jump, spool drop."""

    KIND: ClassVar[str] = "agent_event"

    event: str = field(metadata=bounds(max_len=64))
    details: Mapping[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownEvent(Event):
    """An event kind from a newer minor version: kept as it came, never fatal."""

    unknown_kind: str = field(metadata=bounds(max_len=64))
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.unknown_kind

    def _check(self) -> None:
        # kept to be sent on: it must encode (no NaN or inf, no lone surrogates)
        try:
            json.dumps(dict(self.data), ensure_ascii=False, allow_nan=False).encode()
            orjson.dumps(dict(self.data))  # what the codec writes with: 64-bit integers
        except (TypeError, ValueError, RecursionError) as err:
            raise ProtocolError(f"data: cannot be encoded as JSON: {err}", field="data") from None


EVENT_TYPES: tuple[type[Event], ...] = (
    ProbeWindow,
    ProbeChange,
    DeviceStatus,
    HostSample,
    Txn,
    AgentEvent,
)
EVENT_KINDS: Mapping[str, type[Event]] = {cls.KIND: cls for cls in EVENT_TYPES}


#: What ``backlog`` means, for the schema and the docs.
BACKLOG_DOC = (
    "events still in the agent's spool after this report's events (optional; "
    "a v1 extension: absent from older agents)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """What an agent uploads: its identity and a batch of events."""

    v: str = VERSION
    agent: AgentInfo
    sent_at: datetime
    events: tuple[Event, ...] = ()
    #: how many events the agent still holds queued behind this batch;
    #: ``None`` when the sender does not say (agents older than this field)
    backlog: int | None = field(default=None, metadata=bounds(min=0, max=SEQ_MAX, doc=BACKLOG_DOC))

    def __post_init__(self) -> None:
        parse_version(self.v)
        object.__setattr__(self, "sent_at", parse_datetime(self.sent_at, "sent_at"))
        object.__setattr__(self, "backlog", check_backlog(self.backlog))
        if not isinstance(self.agent, AgentInfo):
            raise ProtocolError("agent: expected AgentInfo", field="agent")
        events = tuple(self.events)
        for i, ev in enumerate(events):
            if not isinstance(ev, Event):
                raise ProtocolError(f"events[{i}]: expected an event", field=f"events[{i}]")
        object.__setattr__(self, "events", events)


#: The spec of ``Report.backlog``: one description for the constructor, the decoders and the schema.
BACKLOG_SPEC: FieldSpec = next(s for s in specs(Report) if s.name == "backlog")


def check_backlog(value: object) -> int | None:
    """A report's ``backlog``: ``None`` (not sent) or an integer from 0 to 2⁶³−1."""
    result: int | None = BACKLOG_SPEC.convert(value, "backlog")
    return result
