"""Hypothesis strategies and helpers shared by the protocol tests.

The strategies for wire types are derived from ``protocol.fields.specs(cls)``:
each field's annotation and ``bounds`` metadata give its strategy, so a new
field is covered without touching this file. A few cross-field rules
(``ok <= sent``, currency codes, non-empty ids) are applied per type.

Test modules import it as ``tests.protocol.strategies``: pytest runs in
importlib mode with the repository root on ``sys.path``, so this works
whether or not ``tests/`` has an ``__init__.py``. There is deliberately no
``tests/protocol/__init__.py`` (nor a bare ``protocol_*`` module name) that
could ever shadow the real ``protocol`` package.
"""

from __future__ import annotations

import dataclasses
import json
import math
import string
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal, Union, get_args, get_origin

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import protocol
from protocol import (
    EVENT_KINDS,
    EVENT_TYPES,
    AgentInfo,
    Event,
    ProbeWindow,
    ProtocolError,
    Report,
    Txn,
    UnknownEvent,
)
from protocol.events import SEQ_MAX
from protocol.fields import DEFAULT_MAX_STR, MAX_ITEMS, MAX_KEY_LEN, FieldSpec, specs

#: Statuses a ProtocolError may carry (malformed, too large, unknown encoding).
STATUSES = {400, 413, 415}

# A timing is never asserted in a test, and Hypothesis' deadline is one: the
# suite runs on 2 loaded cores next to other suites.
FAST = settings(max_examples=200, deadline=None)
#: For tests parametrised over the seven wire types: 100 examples per type.
PER_TYPE = settings(max_examples=100, deadline=None)
THOROUGH = settings(max_examples=300, deadline=None)
# Whole reports are big values; drawing them is legitimately slow-ish and
# large, which is exactly what we want to fuzz with.
BIG = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------
# Building blocks


def _offsets() -> st.SearchStrategy[timezone]:
    # RFC 3339 offsets are whole minutes, up to a day either way
    minutes = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1)
    return st.one_of(
        st.just(UTC),
        st.sampled_from([timezone(timedelta(hours=h)) for h in (-12, -5, 1, 5, 14)]),
        minutes.map(lambda m: timezone(timedelta(minutes=m))),
    )


#: Aware datetimes at any offset whose UTC instant is still a valid datetime
#: (years 1 to 9999, offsets up to a day either way).
aware_datetimes = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=_offsets(),
)

finite_floats = st.floats(allow_nan=False, allow_infinity=False)

#: Valid integers stay within 64 bits: what every JSON library agrees on.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
int64s = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)

#: Scalars as the protocol's ``Scalar`` type allows them (what a decoder keeps).
scalars = st.one_of(
    st.none(),
    st.booleans(),
    int64s,
    finite_floats,
    st.text(max_size=40),
    st.text(max_size=DEFAULT_MAX_STR).filter(lambda s: len(s) > 40),
)

keys = st.text(max_size=MAX_KEY_LEN)

#: Well-formed JSON values (finite numbers, encodable strings).
json_values = st.recursive(
    st.none() | st.booleans() | int64s | finite_floats | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _nasty_strings() -> list[str]:
    kinds = sorted(EVENT_KINDS)
    return [
        "",
        " ",
        "\x00",
        "\ud800",  # a lone surrogate: not encodable as UTF-8
        "a\udfffb",
        "1.0",
        "1.7",
        "2.0",
        "1.0\n",
        "\u0661.\u0660",  # Arabic-Indic digits "1.0"
        "1.",
        ".0",
        "NaN",
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00",  # no zone
        "2024-13-01T00:00:00Z",
        "0001-01-01T00:00:00+05:00",  # UTC instant before year 1
        "9999-12-31T23:59:59-05:00",  # UTC instant after year 9999
        "x" * 2000,
        "\U0001f600" * 300,
        "EUR",
        "eur",
        *kinds,
    ]


#: Arbitrary JSON scalars, including the ones a careless decoder trips on.
garbage_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**63, 2**64, 10**400, -(10**400), SEQ_MAX]),
    st.floats(),  # includes NaN and ±Infinity
    st.sampled_from([0.5, -0.0, 1e308, 1e-320]),
    st.text(st.characters(), max_size=30),  # includes lone surrogates
    st.sampled_from(_nasty_strings()),
)

#: Arbitrary JSON values: Hypothesis' recursive strategy over garbage scalars.
garbage_json = st.recursive(
    garbage_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(st.characters(), max_size=10) | st.sampled_from(_nasty_strings()),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


def dumps_garbage(value: Any, *, raw_unicode: bool = False) -> bytes:
    """JSON text of a garbage value, NaN and lone surrogates included.

    ``raw_unicode`` writes non-ASCII characters (and lone surrogates, with
    ``surrogatepass``: bytes that are not UTF-8) instead of ``\\u`` escapes.
    """
    text = json.dumps(value, allow_nan=True, ensure_ascii=not raw_unicode)
    return text.encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------
# Strategies derived from the field specs


def strategy_for(tp: Any, meta: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Valid values for one annotation, honouring its ``bounds`` metadata."""
    origin = get_origin(tp)
    if tp is Any:
        return json_values
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(
            min_value=meta.get("min", INT64_MIN), max_value=meta.get("max", INT64_MAX)
        )
    if tp is float:
        lo, hi = meta.get("min"), meta.get("max")
        ints = st.integers(
            min_value=-(2**60) if lo is None else math.ceil(lo),
            max_value=2**60 if hi is None else math.floor(hi),
        )
        # ints are accepted for float fields and become floats
        return st.one_of(
            st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False), ints
        )
    if tp is str:
        max_len = meta.get("max_len", DEFAULT_MAX_STR)
        return st.one_of(st.text(max_size=min(max_len, 20)), st.text(max_size=max_len))
    if tp is datetime:
        return aware_datetimes
    if origin is Literal:
        return st.sampled_from(get_args(tp))
    if origin in (Union, types.UnionType):
        if set(get_args(tp)) == {str, int, float, bool, type(None)}:
            return scalars
        (inner,) = (a for a in get_args(tp) if a is not type(None))
        return st.none() | strategy_for(inner, meta)
    if origin is tuple:
        items = st.lists(strategy_for(get_args(tp)[0], {}), max_size=MAX_ITEMS)
        return st.one_of(items, items.map(tuple))  # lists become tuples when built
    if origin in (Mapping, typing.Mapping, dict):
        return st.dictionaries(keys, strategy_for(get_args(tp)[1], {}), max_size=MAX_ITEMS)
    raise TypeError(f"no strategy for {tp!r}; teach tests/protocol/strategies.py")


def _ids() -> st.SearchStrategy[str]:
    return st.text(min_size=1, max_size=128)


#: Per-type overrides where a field's own annotation is not enough.
OVERRIDES: dict[tuple[type, str], st.SearchStrategy[Any]] = {
    (AgentInfo, "id"): _ids(),
    (AgentInfo, "terminal_id"): _ids(),
    (AgentInfo, "store_id"): _ids(),
    (Txn, "currency"): st.none() | st.text(alphabet=string.ascii_uppercase, min_size=3, max_size=3),
    (UnknownEvent, "unknown_kind"): st.text(min_size=1, max_size=64).filter(
        lambda k: k not in EVENT_KINDS
    ),
    (UnknownEvent, "data"): st.dictionaries(
        keys.filter(lambda k: k not in ("seq", "ts", "kind")), json_values, max_size=8
    ),
}


def _field_strategy(cls: type, spec: FieldSpec) -> st.SearchStrategy[Any]:
    for klass in cls.__mro__:
        found = OVERRIDES.get((klass, spec.name))
        if found is not None:
            return found
    if spec.name == "seq":
        return st.integers(min_value=1, max_value=SEQ_MAX)  # 0 is "not yet assigned"
    return strategy_for(spec.tp, spec.meta)


def _fix_probe_window(kwargs: dict[str, Any]) -> dict[str, Any]:
    if kwargs["ok"] > kwargs["sent"]:
        kwargs["ok"], kwargs["sent"] = kwargs["sent"], kwargs["ok"]
    return kwargs


FIXUPS: dict[type, Callable[[dict[str, Any]], dict[str, Any]]] = {
    ProbeWindow: _fix_probe_window,
}


def kwargs_for(cls: type) -> st.SearchStrategy[dict[str, Any]]:
    """Constructor arguments: every required field, any subset of the optional ones."""
    required = {s.name: _field_strategy(cls, s) for s in specs(cls) if s.required}
    optional = {s.name: _field_strategy(cls, s) for s in specs(cls) if not s.required}
    strategy = st.fixed_dictionaries(required, optional=optional)
    fixup = FIXUPS.get(cls)
    return strategy if fixup is None else strategy.map(fixup)


def instances(cls: type) -> st.SearchStrategy[Any]:
    """Valid, built instances of a wire type."""
    return kwargs_for(cls).map(lambda kwargs: cls(**kwargs))


#: Any known event.
known_events = st.one_of([instances(cls) for cls in EVENT_TYPES])

unknown_events = instances(UnknownEvent)


@st.composite
def reports(draw: st.DrawFn, *, max_events: int = 6, unknown: bool = False) -> Report:
    """Valid reports with distinct seqs; ``unknown`` mixes in kinds from a newer minor."""
    events = st.one_of(known_events, unknown_events) if unknown else known_events
    evs = draw(st.lists(events, max_size=max_events))
    seqs = draw(
        st.lists(
            st.integers(min_value=1, max_value=SEQ_MAX),
            min_size=len(evs),
            max_size=len(evs),
            unique=True,
        )
    )
    evs = [dataclasses.replace(e, seq=s) for e, s in zip(evs, seqs, strict=True)]
    minor = draw(st.integers(min_value=1, max_value=9999)) if unknown else protocol.MINOR
    return Report(
        v=f"{protocol.MAJOR}.{minor}",
        agent=draw(instances(AgentInfo)),
        sent_at=draw(aware_datetimes),
        events=tuple(evs),
        backlog=draw(st.none() | st.integers(min_value=0, max_value=SEQ_MAX)),
    )


# --------------------------------------------------------------------------
# Hand-written examples (one valid instance per type)

TS = "2024-05-06T07:08:09.123456Z"


def example_kwargs(cls: type) -> dict[str, Any]:
    """Valid constructor arguments for one type, every optional field set."""
    return {
        AgentInfo: {"id": "agent-1", "terminal_id": "T1", "store_id": "S1", "version": "0.1.0"},
        ProbeWindow: {
            "seq": 1,
            "ts": TS,
            "probe": "icmp",
            "target": "10.0.0.1",
            "role": "gateway",
            "acquirer": "acme",
            "window_s": 60.0,
            "sent": 10,
            "ok": 9,
            "loss_pct": 10.0,
            "rtt_min_ms": 1.0,
            "rtt_avg_ms": 2.0,
            "rtt_p95_ms": 3.0,
            "rtt_max_ms": 4.0,
            "jitter_ms": 0.5,
            "errors": {"timeout": 1},
            "extras": {"ttl": 64, "note": "ok", "flag": True, "x": None, "f": 1.5},
        },
        protocol.ProbeChange: {
            "seq": 2,
            "ts": TS,
            "probe": "tcp",
            "target": "acq.example:443",
            "role": "acquirer",
            "acquirer": "acme",
            "state": "fail",
            "error": "timeout",
        },
        protocol.DeviceStatus: {
            "seq": 3,
            "ts": TS,
            "device": "pinpad-1",
            "device_kind": "pinpad",
            "state": "warning",
            "flags": ["paper_low"],
            "attributes": {"firmware": "1.2"},
            "reason": "paper low",
            "heartbeat": True,
        },
        protocol.HostSample: {
            "seq": 4,
            "ts": TS,
            "cpu_pct": 150.0,
            "mem_pct": 50.0,
            "mem_available_bytes": 1 << 30,
            "disk_pct": 70.0,
            "disk_free_bytes": 1 << 33,
            "load1": 0.5,
            "load5": 0.4,
            "load15": 0.3,
            "uptime_s": 3600.0,
            "boot_time": "2024-05-06T06:08:09+02:00",
        },
        Txn: {
            "seq": 5,
            "ts": TS,
            "txn_id": "tx-1",
            "txn_kind": "refund",
            "acquirer": "acme",
            "outcome": "timeout",
            "response_code": "91",
            "latency_ms": 30000.0,
            "started_at": "2024-05-06T07:07:39Z",
            "ended_at": "2024-05-06T07:08:09Z",
            "stan": "000123",
            "rrn": "123456789012",
            "auth_code": "A1B2C3",
            "amount_minor": 1999,
            "currency": "EUR",
            "in_doubt": True,
            "technical": True,
            "message": "host unreachable",
        },
        protocol.AgentEvent: {
            "seq": 6,
            "ts": TS,
            "event": "started",
            "details": {"pid": 42},
        },
        UnknownEvent: {
            "seq": 7,
            "ts": TS,
            "unknown_kind": "from_the_future",
            "data": {"answer": 42, "nested": {"a": [1, 2]}},
        },
    }[cls]


def example(cls: type) -> Any:
    return cls(**example_kwargs(cls))


def example_agent() -> AgentInfo:
    return example(AgentInfo)


def example_report(*, v: str = protocol.VERSION) -> Report:
    return Report(
        v=v,
        agent=example_agent(),
        sent_at=datetime(2024, 5, 6, 7, 8, 10, tzinfo=UTC),
        events=tuple(example(cls) for cls in EVENT_TYPES),
    )


def example_report_json() -> dict[str, Any]:
    """The example report as plain (mutable) JSON values."""
    body: dict[str, Any] = json.loads(protocol.encode_report(example_report()))
    return body


def to_body(data: Any) -> bytes:
    return json.dumps(data, allow_nan=True).encode()


# --------------------------------------------------------------------------
# The invariant


def decode_or_error(body: bytes, **kwargs: Any) -> Report | ProtocolError:
    """Decode, or return the ProtocolError; any other exception fails the test."""
    try:
        return protocol.decode_report(body, **kwargs)
    except ProtocolError as err:
        check_error(err)
        return err


def check_error(err: ProtocolError) -> None:
    assert err.status in STATUSES, repr(err)
    assert isinstance(err.message, str) and err.message, repr(err)
    assert err.field is None or isinstance(err.field, str), repr(err)
    body = err.to_json()
    json.dumps(body)  # the error body must itself be sendable
    assert body["error"] == err.message


def check_reencodes(report: Report) -> None:
    """Whatever decoded must encode again, to something that decodes to the same."""
    again = protocol.decode_report(protocol.encode_report(report))
    assert again == report
    assert (
        protocol.decode_report(
            protocol.decompress(protocol.gzip_body(protocol.encode_report(report)), "gzip")
        )
        == report
    )


def path_text(path: tuple[str | int, ...]) -> str:
    """A JSON path in the protocol's notation: ``events[3].errors.timeout``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def is_within(field: str | None, path: str) -> bool:
    """``field`` is ``path`` or something inside it."""
    return field is not None and (
        field == path or field.startswith(path + ".") or field.startswith(path + "[")
    )


def all_paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path to a value inside a JSON tree, the root excluded."""
    out: list[tuple[str | int, ...]] = []
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return out
    for key, child in items:
        out.append((*prefix, key))
        out.extend(all_paths(child, (*prefix, key)))
    return out


def object_paths(tree: dict[str, Any]) -> list[tuple[str | int, ...]]:
    """Paths of the protocol's objects: the envelope, the agent, each event."""
    return [(), ("agent",), *(("events", i) for i in range(len(tree["events"])))]


def get_at(tree: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def wire_type_at(tree: dict[str, Any], path: tuple[str | int, ...]) -> type | None:
    """The wire type whose object sits at ``path`` (``None`` for the envelope)."""
    if path == ():
        return None
    if path == ("agent",):
        return AgentInfo
    kind = get_at(tree, path)["kind"]
    return EVENT_KINDS[kind]


def field_names(cls: type | None) -> set[str]:
    if cls is None:
        return {"v", "agent", "sent_at", "events", "backlog"}
    names = {s.name for s in specs(cls)}
    if issubclass(cls, Event):
        names.add("kind")
    return names
