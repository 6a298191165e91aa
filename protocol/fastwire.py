"""The collector's fast path: validate a report in C, keep each event's JSON.

The collector does not need typed event objects to store a report: it needs
to know the report is valid, and per event its seq, kind, time and JSON.
Building :mod:`protocol.events` objects in Python costs ~10 µs an event; a
report validated by msgspec against structs generated from the *same* field
specs costs well under 1 µs an event.

:func:`decode_report_rows` tries that fast path first. Whatever it refuses —
or cannot judge (a newer minor version, which may carry unknown event kinds)
— goes through the reference decoder, :func:`protocol.codec.decode_report`,
so every error a client sees (status, message, field) is exactly the
reference decoder's. A test checks with Hypothesis that the fast path accepts
nothing the reference refuses and yields the same events.

msgspec is a well-kept library (C extension, wheels for x86_64 and ARM) that
validates typed JSON; writing that ourselves is not an option.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

import msgspec

from .codec import MAX_EVENTS_PER_REPORT, decode_report, encode_event
from .errors import ProtocolError
from .events import BACKLOG_SPEC, EVENT_TYPES, AgentInfo, ProbeWindow, Report, Txn
from .fields import (
    DEFAULT_MAX_STR,
    INT_MAX,
    INT_MIN,
    MAX_ITEMS,
    MAX_KEY_LEN,
    format_datetime,
    specs,
)
from .version import MINOR, parse_version


class WireEvent(NamedTuple):
    """One validated event as the collector stores it."""

    seq: int
    kind: str
    ts: str  # RFC 3339 UTC with microseconds and Z, as protocol.format_datetime writes it
    body: bytes  # the event as JSON: every field, absent optional ones as null


@dataclass(frozen=True, slots=True)
class WireReport:
    """A validated report: who sent it, its events in the order sent, and
    how many events the agent still has queued (``None``: not said)."""

    agent: AgentInfo
    events: tuple[WireEvent, ...]
    backlog: int | None = None


_CANONICAL_TS = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"
_KEY = Annotated[str, msgspec.Meta(max_length=MAX_KEY_LEN)]
_SCALAR = Union[  # noqa: UP007  (msgspec reads the typing form)
    Annotated[str, msgspec.Meta(max_length=DEFAULT_MAX_STR)],
    Annotated[int, msgspec.Meta(ge=INT_MIN, le=INT_MAX)],
    float,
    bool,
    None,
]


def _wire_type(tp: Any, meta: Mapping[str, Any], *, seq: bool = False) -> Any:
    origin = get_origin(tp)
    if tp is int:
        lo = 1 if seq else meta.get("min", INT_MIN)
        return Annotated[int, msgspec.Meta(ge=lo, le=meta.get("max", INT_MAX))]
    if tp is float:
        bound = {
            k: v for k, v in (("ge", meta.get("min")), ("le", meta.get("max"))) if v is not None
        }
        return Annotated[float, msgspec.Meta(**bound)] if bound else float
    if tp is str:
        return Annotated[str, msgspec.Meta(max_length=meta.get("max_len", DEFAULT_MAX_STR))]
    if tp is bool:
        return bool
    if tp is datetime:
        # Only the form agents write (format_datetime); any other form, valid or
        # not, takes the reference path. _fast checks the date exists.
        return Annotated[str, msgspec.Meta(pattern=_CANONICAL_TS)]
    if origin is Literal:
        return tp
    if origin in (Union, types.UnionType):
        if set(get_args(tp)) == {str, int, float, bool, type(None)}:
            return _SCALAR
        inner = next(a for a in get_args(tp) if a is not type(None))
        return Union[_wire_type(inner, meta), None]  # noqa: UP007
    if origin is tuple:
        item = _wire_type(get_args(tp)[0], {})
        return Annotated[tuple[item, ...], msgspec.Meta(max_length=MAX_ITEMS)]  # type: ignore[valid-type]
    if origin in (Mapping, typing.Mapping, dict):
        value = _wire_type(get_args(tp)[1], {})
        return Annotated[dict[_KEY, value], msgspec.Meta(max_length=MAX_ITEMS)]  # type: ignore[valid-type]
    raise TypeError(f"no wire type for {tp!r}")


def _struct_for(cls: type, *, tag: str | None) -> type[msgspec.Struct]:
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for spec in specs(cls):
        meta = dict(spec.meta)
        wire: Any
        if cls is AgentInfo and spec.name in ("id", "terminal_id", "store_id"):
            wire = Annotated[str, msgspec.Meta(min_length=1, max_length=meta["max_len"])]
        elif cls is Txn and spec.name == "currency":
            wire = Union[Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")], None]  # noqa: UP007
        else:
            wire = _wire_type(spec.tp, meta, seq=spec.name == "seq" and tag is not None)
        if spec.required:
            fields.append((spec.name, wire))
        else:
            default = spec.default
            if isinstance(default, Mapping):
                default = msgspec.field(default_factory=dict)
            fields.append((spec.name, wire, default))
    options: dict[str, Any] = {"frozen": True, "kw_only": True}
    if tag is not None:
        options.update(tag_field="kind", tag=tag)
    return msgspec.defstruct(f"Wire{cls.__name__}", fields, **options)


_EVENT_STRUCTS = tuple(_struct_for(cls, tag=cls.KIND) for cls in EVENT_TYPES)
_AGENT_STRUCT = _struct_for(AgentInfo, tag=None)
_REPORT_STRUCT = msgspec.defstruct(
    "WireReport",
    [
        ("v", str),
        ("agent", _AGENT_STRUCT),
        ("sent_at", Annotated[str, msgspec.Meta(pattern=_CANONICAL_TS)]),
        ("events", list[Union[_EVENT_STRUCTS]]),  # type: ignore[valid-type]  # noqa: UP007
        ("backlog", _wire_type(BACKLOG_SPEC.tp, BACKLOG_SPEC.meta), None),
    ],
)
_DECODER = msgspec.json.Decoder(_REPORT_STRUCT)
_ENCODER = msgspec.json.Encoder()
_PROBE_WINDOW: Any = _EVENT_STRUCTS[EVENT_TYPES.index(ProbeWindow)]
_KIND_OF: dict[type, str] = {s: c.KIND for s, c in zip(_EVENT_STRUCTS, EVENT_TYPES, strict=True)}
#: The timestamp fields of each event struct, checked by _fast.
_TIMES_OF: dict[type, tuple[str, ...]] = {
    s: tuple(f.name for f in specs(c) if datetime in (f.tp, *get_args(f.tp)))
    for s, c in zip(_EVENT_STRUCTS, EVENT_TYPES, strict=True)
}


def _is_time(text: str | None) -> bool:
    """A real instant in the canonical form (the pattern checked the shape)."""
    if text is None:
        return True
    if len(text) != 27:  # the pattern's $ also matches before a final newline
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


class _Refused(Exception):
    """The fast path will not judge this report; the reference decoder will."""


def _fast(raw: bytes, max_events: int) -> WireReport:
    try:
        if not raw.isascii():
            raw.decode()  # strict UTF-8, as the reference parser demands (no surrogates)
        report: Any = _DECODER.decode(raw)
    except (msgspec.MsgspecError, ValueError) as err:  # ValueError: bytes not UTF-8
        raise _Refused from err
    _major, minor = parse_version(report.v)  # a ProtocolError here is the reference's too
    if minor > MINOR or len(report.events) > min(max_events, MAX_EVENTS_PER_REPORT):
        raise _Refused
    wire = report.agent
    agent = AgentInfo(
        id=wire.id, terminal_id=wire.terminal_id, store_id=wire.store_id, version=wire.version
    )
    events = []
    seen: set[int] = set()
    if not _is_time(report.sent_at):
        raise _Refused
    event: Any
    for event in report.events:
        kind = type(event)
        if event.seq in seen or (kind is _PROBE_WINDOW and event.ok > event.sent):
            raise _Refused
        seen.add(event.seq)
        for name in _TIMES_OF[kind]:
            if not _is_time(getattr(event, name)):
                raise _Refused
        body = _ENCODER.encode(event)
        events.append(WireEvent(event.seq, _KIND_OF[kind], event.ts, body))
    return WireReport(agent, tuple(events), report.backlog)


def decode_report_rows(raw: bytes, *, max_events: int = MAX_EVENTS_PER_REPORT) -> WireReport:
    """Validate a (decompressed) report and return its events as stored rows.

    Raises :class:`ProtocolError` exactly as :func:`protocol.decode_report`
    does for the same bytes.
    """
    try:
        return _fast(raw, max_events)
    except _Refused:
        pass
    return wire_report(decode_report(raw, max_events=max_events))


def wire_report(report: Report) -> WireReport:
    """The rows of a typed report (the reference path, and for tests)."""
    rows = (WireEvent(e.seq, e.kind, format_datetime(e.ts), encode_event(e)) for e in report.events)
    return WireReport(report.agent, tuple(rows), report.backlog)


__all__ = ["ProtocolError", "WireEvent", "WireReport", "decode_report_rows", "wire_report"]
