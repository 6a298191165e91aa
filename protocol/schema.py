"""JSON Schema of wire protocol v1, generated from the types in :mod:`protocol.events`.

The generated schema is checked in as ``protocol/schema/report-v1.json`` so
that people writing an agent in another language can read it; a test fails
when the types and the file drift apart. Regenerate with ``make schema``
(``python -m protocol.schema --write``).
"""

from __future__ import annotations

import json
import sys
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from .events import BACKLOG_SPEC, EVENT_TYPES, AgentInfo, Event, Report
from .fields import DEFAULT_MAX_STR, MAX_ITEMS, MAX_KEY_LEN, specs
from .version import MAJOR

SCHEMA_PATH = Path(__file__).parent / "schema" / f"report-v{MAJOR}.json"

_SCALAR = {"type": ["string", "number", "boolean", "null"]}


def _type_schema(tp: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    origin = get_origin(tp)
    out: dict[str, Any]
    if tp is bool:
        out = {"type": "boolean"}
    elif tp is int:
        out = {"type": "integer"}
    elif tp is float:
        out = {"type": "number"}
    elif tp is str:
        out = {"type": "string", "maxLength": meta.get("max_len", DEFAULT_MAX_STR)}
    elif tp is datetime:
        out = {"type": "string", "format": "date-time"}
    elif tp is Any:
        out = {}
    elif origin is Literal:
        out = {"enum": list(get_args(tp))}
    elif origin in (Union, types.UnionType):
        if set(get_args(tp)) == {str, int, float, bool, type(None)}:
            return dict(_SCALAR)
        inner = next(a for a in get_args(tp) if a is not type(None))
        return {"anyOf": [_type_schema(inner, meta), {"type": "null"}]}
    elif origin is tuple:
        out = {
            "type": "array",
            "items": _type_schema(get_args(tp)[0], {}),
            "maxItems": MAX_ITEMS,
        }
    elif origin in (Mapping, typing.Mapping, dict):
        out = {
            "type": "object",
            "propertyNames": {"maxLength": MAX_KEY_LEN},
            "additionalProperties": _type_schema(get_args(tp)[1], {}),
            "maxProperties": MAX_ITEMS,
        }
    else:
        raise TypeError(f"no schema for {tp!r}")
    if "min" in meta and out.get("type") in ("integer", "number"):
        out["minimum"] = meta["min"]
    if "max" in meta and out.get("type") in ("integer", "number"):
        out["maximum"] = meta["max"]
    if "doc" in meta:
        out["description"] = meta["doc"]
    return out


def _object_schema(cls: type, *, kind: str | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {}
    required: list[str] = []
    for spec in specs(cls):
        props[spec.name] = _type_schema(spec.tp, spec.meta)
        if spec.required:
            required.append(spec.name)
    if kind is not None:
        props["kind"] = {"const": kind}
        required.insert(2, "kind")
        props["seq"]["minimum"] = 1
    doc = (cls.__doc__ or "").strip().splitlines()[0]
    return {
        "type": "object",
        "description": doc,
        "properties": props,
        "required": required,
        "additionalProperties": True,
    }


def build_schema() -> dict[str, Any]:
    """The JSON Schema of a v1 report (draft 2020-12)."""
    defs: dict[str, Any] = {"AgentInfo": _object_schema(AgentInfo)}
    for cls in EVENT_TYPES:
        defs[cls.__name__] = _object_schema(cls, kind=cls.KIND)
    report_doc = (Report.__doc__ or "").strip()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://posmon.invalid/schema/report-v{MAJOR}.json",
        "title": f"posmon report, protocol v{MAJOR}",
        "description": report_doc + " " + (Event.__doc__ or "").strip(),
        "type": "object",
        "properties": {
            "v": {"type": "string", "pattern": rf"^{MAJOR}\.[0-9]+$"},
            "agent": {"$ref": "#/$defs/AgentInfo"},
            "sent_at": {"type": "string", "format": "date-time"},
            "events": {
                "type": "array",
                "items": {"oneOf": [{"$ref": f"#/$defs/{c.__name__}"} for c in EVENT_TYPES]},
            },
            "backlog": _type_schema(BACKLOG_SPEC.tp, BACKLOG_SPEC.meta),
        },
        "required": ["v", "agent", "sent_at", "events"],
        "additionalProperties": True,
        "$defs": defs,
    }


def render() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--write" in args:
        SCHEMA_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {SCHEMA_PATH}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
