"""Per-type decoders and encoders compiled from the field specs.

:func:`protocol.fields.from_json` and :func:`protocol.fields.to_json` walk
the field specs for every object: clear, but a collector ingesting tens of
thousands of events a second pays for every loop and call. This module
generates, once per wire type, a straight-line Python function that does
the same checks with the simple cases (int, float, str, bool, Literal and
their optional forms) inlined, and falls back to the field's own converter
for the rest. Same results, same errors, same messages — the protocol tests
run the codec through these functions, and the hand-written path stays the
reference for constructors.
"""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal, Union, get_args, get_origin

from .errors import ProtocolError
from .fields import (
    DEFAULT_MAX_STR,
    INT_MAX,
    INT_MIN,
    FieldSpec,
    _check_text,
    _fail,
    _out_of_range,
    format_datetime,
    parse_datetime,
    specs,
)

Decoder = Callable[[Mapping[str, Any], str], Any]
Encoder = Callable[[Any], dict[str, Any]]

_MISSING = object()
_DECODERS: dict[type, Decoder] = {}
_ENCODERS: dict[tuple[type, tuple[str, ...]], Encoder] = {}


def _missing(name: str) -> ProtocolError:
    return ProtocolError(f"{name}: required field is missing", field=name)


def _below(name: str, value: float, lo: float) -> ProtocolError:
    return ProtocolError(f"{name}: {value} is below the minimum {lo}", field=name)


def _above(name: str, value: float, hi: float) -> ProtocolError:
    return ProtocolError(f"{name}: {value} is above the maximum {hi}", field=name)


def _too_long(name: str, limit: int) -> ProtocolError:
    return ProtocolError(f"{name}: longer than {limit} characters", field=name)


#: Past this an int has no float value (float() raises OverflowError).
_FLOAT_INT_MAX = int(sys.float_info.max)


def _number_out_of_range(name: str) -> ProtocolError:
    return ProtocolError(f"{name}: number is out of range", field=name)


def _not_finite(name: str) -> ProtocolError:
    return ProtocolError(f"{name}: number must be finite", field=name)


def _not_one_of(name: str, shown: str) -> ProtocolError:
    return ProtocolError(f"{name}: must be one of {shown}", field=name)


def _prefixed(err: ProtocolError, path: str) -> ProtocolError:
    prefix = f"{path}." if path else ""
    field = prefix + err.field if err.field else path or None
    return ProtocolError(f"{prefix}{err.message}", field=field, status=err.status)


def _utc_text(value: datetime) -> str:
    text = value.isoformat(timespec="microseconds")
    if text.endswith("+00:00"):
        return text[:-6] + "Z"
    return format_datetime(value)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (Union, types.UnionType):
        args = get_args(tp)
        if type(None) in args and len(args) == 2:
            return next(a for a in args if a is not type(None)), True
    return tp, False


def _check_lines(spec: FieldSpec, inner: Any, env: dict[str, Any], i: int) -> list[str] | None:
    """Inline checks of ``v`` for a simple type, or None to use the converter."""
    name = repr(spec.name)
    meta = spec.meta
    lo, hi = meta.get("min"), meta.get("max")
    bounds = []
    if lo is not None:
        env[f"lo{i}"] = lo
        bounds += [f"if v < lo{i}:", f"    raise _below({name}, v, lo{i})"]
    if hi is not None:
        env[f"hi{i}"] = hi
        bounds += [f"if v > hi{i}:", f"    raise _above({name}, v, hi{i})"]
    if inner is int:
        return [
            "if type(v) is not int:",
            f"    raise _fail({name}, 'integer', v)",
            "if not _INT_MIN <= v <= _INT_MAX:",
            f"    raise _out_of_range({name})",
            *bounds,
        ]
    if inner is float:
        return [
            "t = type(v)",
            "if t is float:",
            "    if not _isfinite(v):",
            f"        raise _not_finite({name})",
            "elif t is int:",
            "    if not -_FLOAT_INT_MAX <= v <= _FLOAT_INT_MAX:",
            f"        raise _number_out_of_range({name})",
            "    v = float(v)",
            "else:",
            f"    raise _fail({name}, 'number', v)",
            *bounds,
        ]
    if inner is str:
        limit = meta.get("max_len", DEFAULT_MAX_STR)
        return [
            "if type(v) is not str:",
            f"    raise _fail({name}, 'string', v)",
            f"if len(v) > {int(limit)}:",
            f"    raise _too_long({name}, {int(limit)})",
            "if not v.isascii():",
            f"    _check_text(v, {name})",
        ]
    if inner is bool:
        return ["if type(v) is not bool:", f"    raise _fail({name}, 'boolean', v)"]
    if inner is datetime:
        return [f"v = _parse_datetime(v, {name})"]
    if get_origin(inner) is Literal:
        allowed = get_args(inner)
        env[f"allowed{i}"] = frozenset(allowed)
        env[f"shown{i}"] = ", ".join(allowed)
        return [
            f"if type(v) is not str or v not in allowed{i}:",
            f"    raise _not_one_of({name}, shown{i})",
        ]
    return None


def _indent(lines: list[str], by: int) -> list[str]:
    pad = " " * by
    return [pad + line for line in lines]


def decoder(cls: type) -> Decoder:
    """``decode(data, path) -> cls`` for decoded JSON; unknown keys are ignored."""
    cached = _DECODERS.get(cls)
    if cached is not None:
        return cached
    env: dict[str, Any] = {
        "_cls": cls,
        "_new": object.__new__,
        "_set": object.__setattr__,
        "_MISSING": _MISSING,
        "_fail": _fail,
        "_missing": _missing,
        "_below": _below,
        "_above": _above,
        "_too_long": _too_long,
        "_check_text": _check_text,
        "_not_finite": _not_finite,
        "_not_one_of": _not_one_of,
        "_isfinite": math.isfinite,
        "_INT_MIN": INT_MIN,
        "_INT_MAX": INT_MAX,
        "_out_of_range": _out_of_range,
        "_FLOAT_INT_MAX": _FLOAT_INT_MAX,
        "_number_out_of_range": _number_out_of_range,
        "_parse_datetime": parse_datetime,
        "_prefixed": _prefixed,
        "ProtocolError": ProtocolError,
        "_check": getattr(cls, "_check", None),
    }
    body = ["obj = _new(_cls)"]
    for i, spec in enumerate(specs(cls)):
        name = repr(spec.name)
        inner, optional = _unwrap_optional(spec.tp)
        checks = _check_lines(spec, inner, env, i)
        if checks is None:
            env[f"conv{i}"] = spec.convert
            convert = [f"v = conv{i}(v, {name})"]
        elif optional:
            convert = ["if v is not None:", *_indent(checks, 4)]
        else:
            convert = checks
        env[f"default{i}"] = spec.default
        absent = [f"raise _missing({name})"] if spec.required else [f"v = default{i}"]
        body += [
            f"v = data.get({name}, _MISSING)",
            "if v is _MISSING:",
            *_indent(absent, 4),
            "else:",
            *_indent(convert, 4),
            f"_set(obj, {name}, v)",
        ]
    if env["_check"] is not None:
        body.append("_check(obj)")
    body.append("return obj")
    source = "\n".join(
        [
            "def decode(data, path):",
            "    try:",
            *_indent(body, 8),
            "    except ProtocolError as err:",
            "        raise _prefixed(err, path) from None",
        ]
    )
    exec(compile(source, f"<protocol decoder for {cls.__name__}>", "exec"), env)
    decode: Decoder = env["decode"]
    _DECODERS[cls] = decode
    return decode


def encoder(cls: type, *, head: Mapping[str, str] | None = None) -> Encoder:
    """``encode(obj) -> dict`` of plain JSON values; ``None`` fields are left out.

    ``head`` names fields to put first, in order (events: ``seq``, ``ts``),
    with ``kind`` after them when the type has a ``KIND``.
    """
    key = (cls, tuple(head or ()))
    cached = _ENCODERS.get(key)
    if cached is not None:
        return cached
    env: dict[str, Any] = {"_utc_text": _utc_text, "_dict": dict, "_list": list}
    all_specs = {s.name: s for s in specs(cls)}
    order = [n for n in (head or {}) if n in all_specs]
    kind = getattr(cls, "KIND", "")
    lines = ["out = {}"]

    def emit(spec: FieldSpec, i: int) -> list[str]:
        name = repr(spec.name)
        inner, _optional = _unwrap_optional(spec.tp)
        origin = get_origin(inner)
        if inner is datetime:
            value = "_utc_text(v)"
        elif origin is tuple:
            value = "_list(v)"
        elif origin is not None and origin not in (Literal, Union, types.UnionType):
            value = "_dict(v)"  # a Mapping
        elif spec.encode is not None and inner not in (int, float, str, bool):
            env[f"enc{i}"] = spec.encode
            value = f"enc{i}(v)"
        else:
            value = "v"
        return [f"v = obj.{spec.name}", "if v is not None:", f"    out[{name}] = {value}"]

    for i, name in enumerate(order):
        lines += emit(all_specs[name], i)
    if kind:
        lines.append(f"out['kind'] = {kind!r}")
    for i, spec in enumerate(all_specs.values(), start=len(order)):
        if spec.name not in order:
            lines += emit(spec, i)
    lines.append("return out")
    source = "\n".join(["def encode(obj):", *_indent(lines, 4)])
    exec(compile(source, f"<protocol encoder for {cls.__name__}>", "exec"), env)
    encode: Encoder = env["encode"]
    _ENCODERS[key] = encode
    return encode
