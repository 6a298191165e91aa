"""The checked-in JSON Schema matches the types, and agrees with the decoder."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
from hypothesis import given
from jsonschema import Draft202012Validator

from protocol import EVENT_TYPES, ProtocolError, Report, decode_report, encode_report
from protocol.schema import build_schema, render
from tests.protocol.strategies import BIG, example_report_json, reports, to_body

CHECKED_IN = resources.files("protocol").joinpath("schema", "report-v1.json").read_text("utf-8")
VALIDATOR = Draft202012Validator(json.loads(CHECKED_IN))


def test_checked_in_schema_is_what_the_types_generate() -> None:
    assert render() == CHECKED_IN, (
        "protocol/schema/report-v1.json is out of date with protocol/events.py: "
        "run `make schema` and commit the result"
    )


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(build_schema())
    assert set(build_schema()["$defs"]) == {"AgentInfo"} | {c.__name__ for c in EVENT_TYPES}


def test_example_report_validates() -> None:
    VALIDATOR.validate(example_report_json())


@given(report=reports())
@BIG
def test_every_encoded_report_validates_against_the_checked_in_schema(report: Report) -> None:
    errors = list(VALIDATOR.iter_errors(json.loads(encode_report(report))))
    assert not errors, [e.message for e in errors]


def _set(path: str, value: Any) -> dict[str, Any]:
    """The example report with one value replaced (``events.0.sent``)."""
    body = example_report_json()
    parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
    target = body
    for part in parts[:-1]:
        target = target[part]
    target[parts[-1]] = value
    return body


# (path in the example report, a value of the wrong type)
TYPE_ERRORS = [
    ("v", 1),
    ("v", "2.0"),
    ("agent", "a"),
    ("agent.id", 7),
    ("sent_at", 1_700_000_000),
    ("events", {}),
    ("events.0.seq", "1"),
    ("events.0.seq", 0),
    ("events.0.sent", True),
    ("events.0.sent", 1.5),
    ("events.0.loss_pct", "5"),
    ("events.0.loss_pct", False),
    ("events.0.role", "router"),
    ("events.0.acquirer", 3),
    ("events.0.errors", [1]),
    ("events.0.errors", {"timeout": "1"}),
    ("events.0.extras", {"k": [1]}),
    ("events.0.extras", {"k": {"a": 1}}),
    ("events.1.state", True),
    ("events.2.flags", "paper_low"),
    ("events.2.flags", [1]),
    ("events.2.heartbeat", "yes"),
    ("events.3.mem_pct", 101),
    ("events.4.outcome", None),
    ("events.4.in_doubt", 1),
    ("events.5.details", None),
    ("events.5.event", "x" * 65),
    ("backlog", -1),
    ("backlog", "3"),
    ("backlog", 1.5),
    ("backlog", True),
    ("backlog", 2**63),
]


@pytest.mark.parametrize(
    ("path", "value"), TYPE_ERRORS, ids=[f"{p}={v!r:.12}" for p, v in TYPE_ERRORS]
)
def test_what_the_decoder_refuses_the_schema_refuses_too(path: str, value: Any) -> None:
    body = _set(path, value)
    with pytest.raises(ProtocolError) as info:
        decode_report(to_body(body))
    field = info.value.field or ""
    assert field.replace("[", ".").replace("]", "").startswith(path), (field, path)
    assert not VALIDATOR.is_valid(body), f"the schema accepts {path}={value!r}"
