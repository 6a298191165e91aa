"""JSON codec of wire protocol v1: bytes in, typed values out, and back.

No I/O: the HTTP layers on either side pass bodies in and out. Reports
travel as UTF-8 JSON, gzip-compressed on the wire (``Content-Encoding:
gzip``). Whatever bytes arrive, :func:`decode_report` either returns a
:class:`Report` or raises :class:`ProtocolError` with the HTTP status to
answer with (400 malformed, 413 too large, 415 unknown encoding) — never any
other exception.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from .compiled import decoder, encoder
from .errors import ProtocolError
from .events import EVENT_KINDS, AgentInfo, Event, Report, UnknownEvent, check_backlog
from .fields import format_datetime, parse_datetime, to_json
from .version import MINOR, VERSION, parse_version

#: Hard ceilings a decoder applies whatever the caller asks for.
MAX_EVENTS_PER_REPORT = 10_000
MAX_BODY_BYTES = 16 * 1024 * 1024

_EVENT_HEAD = {"seq": "", "ts": ""}


def _dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON. Values were validated when built (finite numbers, 64-bit ints)."""
    return orjson.dumps(value)


def event_to_json(event: Event) -> dict[str, Any]:
    """Plain JSON values of one event, ``seq``, ``ts`` and ``kind`` first."""
    if isinstance(event, UnknownEvent):
        body = dict(event.data)
        body.update(seq=event.seq, ts=format_datetime(event.ts), kind=event.unknown_kind)
        return body
    return encoder(type(event), head=_EVENT_HEAD)(event)


def encode_event(event: Event) -> bytes:
    """One event as compact UTF-8 JSON (what the agent's spool keeps)."""
    return _dumps(event_to_json(event))


def encode_report_raw(
    agent: AgentInfo,
    sent_at: datetime,
    events: Iterable[bytes],
    *,
    v: str = VERSION,
    backlog: int | None = None,
) -> bytes:
    """A report around events already encoded by :func:`encode_event`.

    The agent's uplink sends events straight from its spool this way without
    decoding them again. ``backlog`` (events still queued behind these) is
    left out when ``None``.
    """
    head: dict[str, Any] = {"v": v, "agent": to_json(agent), "sent_at": format_datetime(sent_at)}
    if backlog is not None:
        head["backlog"] = check_backlog(backlog)
    return _dumps(head)[:-1] + b',"events":[' + b",".join(events) + b"]}"


def encode_report(report: Report) -> bytes:
    """A whole report as compact UTF-8 JSON."""
    return encode_report_raw(
        report.agent,
        report.sent_at,
        (encode_event(e) for e in report.events),
        v=report.v,
        backlog=report.backlog,
    )


def gzip_body(body: bytes) -> bytes:
    """Compress a body for the wire (fast level: bodies are small and CPU is not)."""
    return gzip.compress(body, compresslevel=5, mtime=0)


def decompress(body: bytes, encoding: str | None, *, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """Undo ``Content-Encoding``, refusing anything that inflates past ``max_bytes``."""
    enc = (encoding or "").strip().lower() or "identity"
    if enc == "identity":
        if len(body) > max_bytes:
            raise ProtocolError(f"body larger than {max_bytes} bytes", status=413)
        return body
    if enc != "gzip":
        raise ProtocolError(
            f"content encoding {enc[:32]!r} not supported; use gzip or none", status=415
        )
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(body, max_bytes + 1)
        if len(out) > max_bytes or inflater.unconsumed_tail:
            raise ProtocolError(f"body inflates past {max_bytes} bytes", status=413)
        out += inflater.flush()
    except zlib.error as err:
        raise ProtocolError(f"body is not valid gzip: {err}") from None
    if not inflater.eof:
        raise ProtocolError("body is truncated gzip")
    if inflater.unused_data:
        raise ProtocolError("body has bytes after the end of the gzip stream")
    if len(out) > max_bytes:
        raise ProtocolError(f"body inflates past {max_bytes} bytes", status=413)
    return out


def _loads(body: bytes) -> Any:
    try:
        # orjson is strict RFC 8259: no NaN/Infinity, no lone surrogates, a
        # depth limit; every refusal is a ValueError.
        return orjson.loads(body)
    except ValueError as err:
        raise ProtocolError(f"body is not valid JSON: {err}") from None


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{path or 'body'}: expected an object", field=path or None)
    return value


def decode_event(data: Any, path: str = "", *, minor: int = MINOR) -> Event:
    """One event from decoded JSON.

    An unknown ``kind`` is kept as :class:`UnknownEvent` when the sender
    speaks a newer minor version than we do, and refused otherwise.
    """
    obj = _object(data, path)
    prefix = f"{path}." if path else ""
    kind = obj.get("kind")
    if not isinstance(kind, str):
        raise ProtocolError(f"{prefix}kind: required string is missing", field=prefix + "kind")
    cls = EVENT_KINDS.get(kind)
    if cls is None:
        if minor <= MINOR:
            known = ", ".join(sorted(EVENT_KINDS))
            raise ProtocolError(
                f"{prefix}kind: unknown event kind {kind[:64]!r}; v{VERSION} kinds are {known}",
                field=prefix + "kind",
            )
        data_only = {k: v for k, v in obj.items() if k not in ("seq", "ts", "kind")}
        try:
            event: Event = UnknownEvent(
                seq=obj.get("seq"),  # type: ignore[arg-type]  # the constructor validates
                ts=obj.get("ts"),  # type: ignore[arg-type]
                unknown_kind=kind,
                data=data_only,
            )
        except ProtocolError as err:
            raise ProtocolError(prefix + err.message, field=prefix + (err.field or "")) from None
    else:
        event = decoder(cls)(obj, path)
    if event.seq < 1:
        raise ProtocolError(f"{prefix}seq: must be at least 1", field=prefix + "seq")
    return event


def decode_report(body: bytes, *, max_events: int = MAX_EVENTS_PER_REPORT) -> Report:
    """A report from (already decompressed) JSON bytes.

    Checks the version first, so a newer major version is refused with a
    message naming what we speak even when the rest would not parse.
    """
    data = _object(_loads(body), "")
    _major, minor = parse_version(data.get("v"))
    agent = decoder(AgentInfo)(_object(data.get("agent"), "agent"), "agent")
    if "sent_at" not in data:
        raise ProtocolError("sent_at: required field is missing", field="sent_at")
    sent_at = parse_datetime(data["sent_at"], "sent_at")
    backlog = check_backlog(data.get("backlog"))
    raw_events = data.get("events")
    if not isinstance(raw_events, list):
        raise ProtocolError("events: expected an array", field="events")
    limit = min(max_events, MAX_EVENTS_PER_REPORT)
    if len(raw_events) > limit:
        raise ProtocolError(
            f"events: {len(raw_events)} events in one report, the limit is {limit}",
            field="events",
            status=413,
        )
    events = []
    seen: set[int] = set()
    for i, raw in enumerate(raw_events):
        event = decode_event(raw, f"events[{i}]", minor=minor)
        if event.seq in seen:
            raise ProtocolError(
                f"events[{i}].seq: {event.seq} appears twice", field=f"events[{i}].seq"
            )
        seen.add(event.seq)
        events.append(event)
    report = object.__new__(Report)
    object.__setattr__(report, "v", data["v"])
    object.__setattr__(report, "agent", agent)
    object.__setattr__(report, "sent_at", sent_at)
    object.__setattr__(report, "events", tuple(events))
    object.__setattr__(report, "backlog", backlog)
    return report


@dataclass(frozen=True, slots=True)
class Ack:
    """The collector's answer to a report: the seqs now durable on its side."""

    acked: tuple[int, ...]
    stored: int = 0
    duplicates: int = 0

    def __post_init__(self) -> None:
        acked = self.acked
        if not isinstance(acked, list | tuple) or not all(type(s) is int and s >= 1 for s in acked):
            raise ProtocolError("acked: expected an array of positive integers", field="acked")
        object.__setattr__(self, "acked", tuple(acked))
        for name in ("stored", "duplicates"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ProtocolError(f"{name}: expected a non-negative integer", field=name)

    def to_json(self) -> dict[str, Any]:
        return {"acked": list(self.acked), "stored": self.stored, "duplicates": self.duplicates}


def encode_ack(ack: Ack) -> bytes:
    return _dumps(ack.to_json())


def decode_ack(body: bytes) -> Ack:
    """The collector's acknowledgement; anything odd is a ProtocolError."""
    data = _object(_loads(body), "")
    return Ack(
        acked=data.get("acked"),  # type: ignore[arg-type]  # the constructor validates
        stored=data.get("stored", 0),
        duplicates=data.get("duplicates", 0),
    )
