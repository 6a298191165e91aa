"""posmon wire protocol v1: sans-I/O types, codec and versions shared by agent and collector."""

from .causes import TECHNICAL_RESPONSE_CODES, Cause
from .codec import (
    Ack,
    decode_ack,
    decode_event,
    decode_report,
    decompress,
    encode_ack,
    encode_event,
    encode_report,
    encode_report_raw,
    event_to_json,
    gzip_body,
)
from .errors import ProtocolError
from .events import (
    EVENT_KINDS,
    EVENT_TYPES,
    AgentEvent,
    AgentInfo,
    DeviceStatus,
    Event,
    HostSample,
    ProbeChange,
    ProbeWindow,
    Report,
    Txn,
    UnknownEvent,
)
from .fields import format_datetime, parse_datetime
from .version import MAJOR, MINOR, VERSION, parse_version

__all__ = [
    "EVENT_KINDS",
    "EVENT_TYPES",
    "MAJOR",
    "MINOR",
    "TECHNICAL_RESPONSE_CODES",
    "VERSION",
    "Ack",
    "AgentEvent",
    "AgentInfo",
    "Cause",
    "DeviceStatus",
    "Event",
    "HostSample",
    "ProbeChange",
    "ProbeWindow",
    "ProtocolError",
    "Report",
    "Txn",
    "UnknownEvent",
    "decode_ack",
    "decode_event",
    "decode_report",
    "decompress",
    "encode_ack",
    "encode_event",
    "encode_report",
    "encode_report_raw",
    "event_to_json",
    "format_datetime",
    "gzip_body",
    "parse_datetime",
    "parse_version",
]
