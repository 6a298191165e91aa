"""Wire types validate when built and never change afterwards."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol
from protocol import (
    EVENT_TYPES,
    AgentInfo,
    DeviceStatus,
    ProbeWindow,
    ProtocolError,
    Report,
    Txn,
    UnknownEvent,
)
from protocol.fields import specs
from tests.protocol.strategies import (
    PER_TYPE,
    TS,
    example,
    example_agent,
    example_kwargs,
    example_report,
    instances,
    is_within,
)

ALL_TYPES = (AgentInfo, *EVENT_TYPES, UnknownEvent)


def _wrong_values(tp: Any) -> list[Any]:
    """Values of the wrong type for an annotation (never ``None`` for an optional)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        if set(get_args(tp)) == {str, int, float, bool, type(None)}:
            return [[1], {"a": 1}, object(), float("nan")]
        (inner,) = (a for a in get_args(tp) if a is not type(None))
        return _wrong_values(inner)
    if tp is str:
        return [123, b"bytes", ["x"], "\ud800"]
    if tp is bool:
        return [1, 0, "true", None]
    if tp is int:
        return ["1", True, 1.5, 1.0, None]
    if tp is float:
        return ["1.0", True, None, [1], float("nan"), float("inf"), 10**400]
    if tp is datetime:
        return ["x", datetime(2024, 1, 1), "2024-01-01T00:00:00", 1_700_000_000, None]
    if origin is Literal:
        return ["bogus", 1, None, get_args(tp)[0].upper()]
    if origin is tuple:
        return ["abc", {"a"}, [1], None]
    if origin in (Mapping, typing.Mapping, dict):
        value_tp = get_args(tp)[1]
        out: list[Any] = [[("a", 1)], "x", None, {1: 1}, {"k" * 65: 1}]
        if value_tp is not Any:
            out += [{"k": v} for v in _wrong_values(value_tp) if v is not None]
        else:
            out += [{"k": object()}, {"k": float("nan")}, {"k": "\ud800"}]
        return out
    raise TypeError(tp)


def _out_of_range(spec: Any) -> list[Any]:
    meta, out = spec.meta, []
    base = spec.tp
    if get_origin(base) in (Union, types.UnionType):
        base = next(a for a in get_args(base) if a is not type(None))
    if "min" in meta:
        out.append(meta["min"] - 1 if base is int else meta["min"] - 0.001)
    if "max" in meta:
        out.append(meta["max"] + 1 if base is int else meta["max"] * 1.001 + 1)
    if base is str:
        out.append("x" * (meta.get("max_len", 1024) + 1))
    return out


CASES = [
    pytest.param(cls, spec.name, value, id=f"{cls.__name__}.{spec.name}={value!r:.20}")
    for cls in ALL_TYPES
    for spec in specs(cls)
    for value in _wrong_values(spec.tp) + _out_of_range(spec)
    if not (value is None and not spec.required and spec.default is None)
]


@pytest.mark.parametrize(("cls", "name", "value"), CASES)
def test_building_with_a_bad_value_names_the_field(cls: type, name: str, value: Any) -> None:
    kwargs = example_kwargs(cls) | {name: value}
    with pytest.raises(ProtocolError) as info:
        cls(**kwargs)
    assert is_within(info.value.field, name), info.value
    assert info.value.status == 400


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_missing_required_field_is_a_type_error(cls: type) -> None:
    # the constructor's own signature: required fields have no default
    required = [s.name for s in specs(cls) if s.required]
    assert required
    kwargs = example_kwargs(cls)
    del kwargs[required[-1]]
    with pytest.raises(TypeError):
        cls(**kwargs)


def test_probe_window_ok_cannot_exceed_sent() -> None:
    kwargs = example_kwargs(ProbeWindow)
    assert ProbeWindow(**kwargs | {"sent": 5, "ok": 5}).ok == 5
    with pytest.raises(ProtocolError) as info:
        ProbeWindow(**kwargs | {"sent": 5, "ok": 6})
    assert info.value.field == "ok"


@pytest.mark.parametrize("currency", ["eur", "EURO", "EU", "€UR", "ÉUR", "123"])
def test_txn_currency_must_be_an_iso_code(currency: str) -> None:
    with pytest.raises(ProtocolError) as info:
        Txn(**example_kwargs(Txn) | {"currency": currency})
    assert info.value.field == "currency"


@pytest.mark.parametrize("name", ["id", "terminal_id", "store_id"])
def test_agent_ids_must_not_be_empty(name: str) -> None:
    with pytest.raises(ProtocolError) as info:
        AgentInfo(**example_kwargs(AgentInfo) | {name: ""})
    assert info.value.field == name


def test_seq_0_means_not_yet_assigned_and_is_allowed_when_built() -> None:
    event = protocol.AgentEvent(seq=0, ts=TS, event="started")  # type: ignore[arg-type]
    assert event.seq == 0
    with pytest.raises(ProtocolError) as info:
        protocol.decode_event(protocol.event_to_json(event))
    assert info.value.field == "seq"


def test_report_validates_its_parts() -> None:
    agent = example_agent()
    when = datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(ProtocolError) as info:
        Report(agent={"id": "a"}, sent_at=when)  # type: ignore[arg-type]
    assert info.value.field == "agent"
    with pytest.raises(ProtocolError) as info:
        Report(agent=agent, sent_at=when, events=(example(Txn), "nope"))  # type: ignore[arg-type]
    assert info.value.field == "events[1]"
    with pytest.raises(ProtocolError) as info:
        Report(agent=agent, sent_at=datetime(2024, 1, 1))  # naive: which zone?
    assert info.value.field == "sent_at"
    with pytest.raises(ProtocolError) as info:
        Report(agent=agent, sent_at="soon")  # type: ignore[arg-type]
    assert info.value.field == "sent_at"
    for v in ("2.0", "1", 1):
        with pytest.raises(ProtocolError) as info:
            Report(v=v, agent=agent, sent_at=when)  # type: ignore[arg-type]
        assert info.value.field == "v"


# --------------------------------------------------------------------------
# Immutability


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_fields_cannot_be_assigned(cls: type) -> None:
    obj = example(cls)
    for spec in specs(cls):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, spec.name, getattr(obj, spec.name))
    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError, TypeError)):
        obj.something_new = 1  # slotted: no __dict__ to put it in
    assert not hasattr(obj, "__dict__")


def test_report_cannot_be_assigned() -> None:
    report = example_report()
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.events = ()  # type: ignore[misc]
    assert isinstance(report.events, tuple)
    built = Report(agent=report.agent, sent_at=report.sent_at, events=list(report.events))  # type: ignore[arg-type]
    assert isinstance(built.events, tuple)


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
@PER_TYPE
def test_built_values_are_read_only(cls: type, data: st.DataObject) -> None:
    obj = data.draw(instances(cls))
    for spec in specs(cls):
        value = getattr(obj, spec.name)
        if get_origin(spec.tp) in (Mapping, typing.Mapping, dict):
            assert isinstance(value, types.MappingProxyType)
            with pytest.raises(TypeError):
                value["new"] = 1  # type: ignore[index]
        if get_origin(spec.tp) is tuple:
            assert isinstance(value, tuple)
        if spec.tp is datetime and value is not None:
            assert value.tzinfo is UTC


def test_inputs_are_copied_not_shared() -> None:
    flags = ["a"]
    attributes: dict[str, Any] = {"k": 1}
    status = DeviceStatus(
        **example_kwargs(DeviceStatus) | {"flags": flags, "attributes": attributes}
    )
    flags.append("b")
    attributes["k"] = 2
    attributes["new"] = 3
    assert status.flags == ("a",)
    assert dict(status.attributes) == {"k": 1}


def test_events_are_equal_by_value() -> None:
    assert example(Txn) == Txn(**example_kwargs(Txn))
    assert example(Txn) != dataclasses.replace(example(Txn), seq=99)
