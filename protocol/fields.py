"""Field machinery shared by every wire type: one description, three uses.

Each wire type is a frozen, slotted dataclass whose annotations use a small
vocabulary (int, float, str, bool, datetime, Literal, ``X | None``,
``tuple[str, ...]``, ``Mapping[str, X]``, ``Scalar`` and nested wire types).
From those annotations and the field metadata (``bounds``) this module builds,
once per class:

- a converter per field that turns JSON-ish input into the typed value or
  raises :class:`ProtocolError` naming the field (used by constructors and
  by the decoder alike);
- an encoder to plain JSON values;
- the JSON Schema fragment (see :mod:`protocol.schema`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Union, get_args, get_origin

from .errors import ProtocolError

Scalar = str | int | float | bool | None
"""A JSON scalar: the value type of free-form attribute maps."""

DEFAULT_MAX_STR = 1024
MAX_ITEMS = 64
MAX_KEY_LEN = 64

Converter = Callable[[Any, str], Any]
Encoder = Callable[[Any], Any]


def bounds(
    *,
    min: float | None = None,
    max: float | None = None,
    max_len: int | None = None,
    doc: str | None = None,
) -> dict[str, Any]:
    """Field metadata: numeric bounds, string length, a description."""
    meta: dict[str, Any] = {}
    if min is not None:
        meta["min"] = min
    if max is not None:
        meta["max"] = max
    if max_len is not None:
        meta["max_len"] = max_len
    if doc is not None:
        meta["doc"] = doc
    return meta


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _check_text(value: str, path: str) -> None:
    """Refuse lone surrogates (``"\\ud800"`` is valid JSON): they cannot be sent as UTF-8."""
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ProtocolError(f"{path}: string is not valid Unicode", field=path) from None


def _fail(path: str, expected: str, value: object) -> ProtocolError:
    return ProtocolError(f"{path}: expected {expected}, got {_type_name(value)}", field=path)


#: JSON numbers travel as 64-bit integers (and every JSON library agrees on those).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def _out_of_range(path: str) -> ProtocolError:
    return ProtocolError(f"{path}: outside the 64-bit integer range", field=path)


def _check_bounds(value: float, path: str, meta: Mapping[str, Any]) -> None:
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        raise ProtocolError(f"{path}: {value} is below the minimum {lo}", field=path)
    if hi is not None and value > hi:
        raise ProtocolError(f"{path}: {value} is above the maximum {hi}", field=path)


def parse_datetime(value: object, path: str) -> datetime:
    """An aware datetime, normalised to UTC, from a datetime or an ISO 8601 string."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ProtocolError(
                f"{path}: {value!r} is not an ISO 8601 timestamp", field=path
            ) from None
    else:
        raise _fail(path, "an ISO 8601 timestamp string", value)
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ProtocolError(f"{path}: timestamp has no time zone (use Z for UTC)", field=path)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ProtocolError(f"{path}: timestamp is out of range in UTC", field=path) from None


def format_datetime(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z``."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _int_converter(meta: Mapping[str, Any]) -> Converter:
    def conv(value: Any, path: str) -> int:
        if type(value) is not int:
            raise _fail(path, "integer", value)
        if not INT_MIN <= value <= INT_MAX:
            raise _out_of_range(path)
        _check_bounds(value, path, meta)
        return value

    return conv


def _float_converter(meta: Mapping[str, Any]) -> Converter:
    def conv(value: Any, path: str) -> float:
        if type(value) is float:
            if not math.isfinite(value):
                raise ProtocolError(f"{path}: number must be finite", field=path)
            number: float = value
        elif type(value) is int:
            try:
                number = float(value)
            except OverflowError:
                raise ProtocolError(f"{path}: number is out of range", field=path) from None
        else:
            raise _fail(path, "number", value)
        _check_bounds(number, path, meta)
        return number

    return conv


def _str_converter(meta: Mapping[str, Any]) -> Converter:
    max_len = meta.get("max_len", DEFAULT_MAX_STR)

    def conv(value: Any, path: str) -> str:
        if type(value) is not str:
            raise _fail(path, "string", value)
        if len(value) > max_len:
            raise ProtocolError(f"{path}: longer than {max_len} characters", field=path)
        _check_text(value, path)
        return value

    return conv


def _bool_converter(value: Any, path: str) -> bool:
    if type(value) is not bool:
        raise _fail(path, "boolean", value)
    return value


def _scalar_converter(value: Any, path: str) -> Scalar:
    if value is None or type(value) is bool:
        return value
    if type(value) is int:
        if not INT_MIN <= value <= INT_MAX:
            raise _out_of_range(path)
        return value
    if type(value) is float:
        if not math.isfinite(value):
            raise ProtocolError(f"{path}: number must be finite", field=path)
        return value
    if type(value) is str:
        if len(value) > DEFAULT_MAX_STR:
            raise ProtocolError(f"{path}: longer than {DEFAULT_MAX_STR} characters", field=path)
        _check_text(value, path)
        return value
    raise _fail(path, "a string, number, boolean or null", value)


def _is_scalar_union(tp: Any) -> bool:
    return set(get_args(tp)) == {str, int, float, bool, type(None)}


def converter_for(tp: Any, meta: Mapping[str, Any]) -> Converter:
    """Build the converter for one annotation."""
    origin = get_origin(tp)
    if tp is Any:
        return lambda value, path: value
    if tp is int:
        return _int_converter(meta)
    if tp is float:
        return _float_converter(meta)
    if tp is str:
        return _str_converter(meta)
    if tp is bool:
        return _bool_converter
    if tp is datetime:
        return parse_datetime
    if origin is Literal:
        allowed = get_args(tp)
        shown = ", ".join(allowed)

        def literal(value: Any, path: str) -> Any:
            if type(value) is not str or value not in allowed:
                raise ProtocolError(f"{path}: must be one of {shown}", field=path)
            return value

        return literal
    if origin in (Union, types.UnionType):
        if _is_scalar_union(tp):
            return _scalar_converter
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != 1 or len(get_args(tp)) != 2:
            raise TypeError(f"unsupported union {tp!r}")
        inner = converter_for(args[0], meta)

        def optional(value: Any, path: str) -> Any:
            return None if value is None else inner(value, path)

        return optional
    if origin is tuple:
        targs = get_args(tp)
        if len(targs) != 2 or targs[1] is not Ellipsis:
            raise TypeError(f"unsupported tuple {tp!r}")
        item = converter_for(targs[0], {})

        def sequence(value: Any, path: str) -> tuple[Any, ...]:
            if not isinstance(value, list | tuple):
                raise _fail(path, "array", value)
            if len(value) > MAX_ITEMS:
                raise ProtocolError(f"{path}: more than {MAX_ITEMS} items", field=path)
            return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))

        return sequence
    if origin in (Mapping, typing.Mapping, dict):
        key_tp, value_tp = get_args(tp)
        if key_tp is not str:
            raise TypeError(f"unsupported mapping key {key_tp!r}")
        value_conv = converter_for(value_tp, {})

        def mapping(value: Any, path: str) -> Mapping[str, Any]:
            if not isinstance(value, Mapping):
                raise _fail(path, "object", value)
            if len(value) > MAX_ITEMS:
                raise ProtocolError(f"{path}: more than {MAX_ITEMS} entries", field=path)
            out: dict[str, Any] = {}
            for key, item in value.items():
                if type(key) is not str or len(key) > MAX_KEY_LEN:
                    raise ProtocolError(
                        f"{path}: keys must be strings of at most {MAX_KEY_LEN} characters",
                        field=path,
                    )
                _check_text(key, path)
                out[key] = value_conv(item, f"{path}.{key}")
            return types.MappingProxyType(out)

        return mapping
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):

        def nested(value: Any, path: str) -> Any:
            if isinstance(value, tp):
                return value
            if not isinstance(value, Mapping):
                raise _fail(path, "object", value)
            return from_json(tp, value, path)

        return nested
    raise TypeError(f"unsupported field type {tp!r}")


def encoder_for(tp: Any) -> Encoder | None:
    """How to turn a typed value into JSON; ``None`` means as it is."""
    origin = get_origin(tp)
    if tp is datetime:
        return format_datetime
    if origin in (Union, types.UnionType) and not _is_scalar_union(tp):
        args = [a for a in get_args(tp) if a is not type(None)]
        inner = encoder_for(args[0])
        if inner is None:
            return None
        return lambda v: None if v is None else inner(v)
    if origin is tuple:
        return list
    if origin in (Mapping, typing.Mapping, dict):
        return dict
    if dataclasses.is_dataclass(tp):
        return to_json
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    tp: Any
    meta: Mapping[str, Any]
    required: bool
    default: Any
    convert: Converter
    encode: Encoder | None


_SPECS: dict[type, tuple[FieldSpec, ...]] = {}


def specs(cls: type) -> tuple[FieldSpec, ...]:
    """The field specs of a wire type, built once and cached."""
    cached = _SPECS.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        out.append(
            FieldSpec(
                name=f.name,
                tp=tp,
                meta=f.metadata,
                required=required,
                default=default,
                convert=converter_for(tp, f.metadata),
                encode=encoder_for(tp),
            )
        )
    result = tuple(out)
    _SPECS[cls] = result
    return result


def normalise(obj: Any) -> None:
    """Validate and normalise a freshly built wire object in place.

    Called from ``__post_init__``: lists become tuples, dicts become read-only
    mappings, timestamps become UTC; anything off raises ProtocolError.
    """
    cls = type(obj)
    for spec in specs(cls):
        value = getattr(obj, spec.name)
        converted = spec.convert(value, spec.name)
        if converted is not value:
            object.__setattr__(obj, spec.name, converted)
    check = getattr(obj, "_check", None)
    if check is not None:
        check()


def from_json(cls: type, data: Mapping[str, Any], path: str = "") -> Any:
    """Build a wire object from decoded JSON, ignoring unknown keys."""
    obj: Any = object.__new__(cls)
    prefix = f"{path}." if path else ""
    for spec in specs(cls):
        key = spec.name
        if key in data:
            value = spec.convert(data[key], prefix + key)
        elif spec.required:
            raise ProtocolError(f"{prefix}{key}: required field is missing", field=prefix + key)
        else:
            value = spec.default
        object.__setattr__(obj, key, value)
    check = getattr(obj, "_check", None)
    if check is not None:
        try:
            check()
        except ProtocolError as err:
            field = prefix + err.field if err.field else path or None
            raise ProtocolError(f"{prefix}{err.message}", field=field) from None
    return obj


def to_json(obj: Any) -> dict[str, Any]:
    """Plain JSON values for a wire object; ``None`` fields are left out."""
    out: dict[str, Any] = {}
    for spec in specs(type(obj)):
        value = getattr(obj, spec.name)
        if value is None:
            continue
        out[spec.name] = spec.encode(value) if spec.encode is not None else value
    return out
