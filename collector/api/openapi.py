"""The collector's OpenAPI 3.1 document, built in code next to the routes it describes.

``GET /api/v1/openapi.json`` serves :func:`document`. The report upload's body
is the wire protocol's own JSON Schema (:func:`protocol.schema.build_schema`),
its ``$defs`` moved under ``components/schemas`` as ``Report<Name>``.
A test checks that every route of the app is here and nothing else is.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from protocol import VERSION
from protocol.schema import build_schema

from . import routes as r

JSON = dict[str, Any]


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _null(schema: JSON) -> JSON:
    """``schema`` or null."""
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(props: dict[str, JSON], *, extra: bool = False) -> JSON:
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": extra,
    }


STR: JSON = {"type": "string"}
INT: JSON = {"type": "integer"}
NUM: JSON = {"type": "number"}
BOOL: JSON = {"type": "boolean"}
TIME: JSON = {"type": "string", "format": "date-time"}
COUNT: JSON = {"type": "integer", "minimum": 0}
STATE: JSON = {"type": "string", "enum": list(r.STATES)}
CAUSE: JSON = {"type": "string", "enum": list(r.CAUSES)}


def _page(item: str) -> JSON:
    return _obj({"items": {"type": "array", "items": _ref(item)}, "next_cursor": _null(STR)})


def _schemas() -> dict[str, JSON]:
    evidence = _obj(
        {"event_id": STR, "kind": _null(STR), "ts": _null(STR), "terminal_id": _null(STR),
         "what": _null(STR)}
    )  # fmt: skip
    txn = _obj(
        {
            "terminal_id": STR, "store_id": STR, "txn_id": STR, "txn_kind": STR,
            "acquirer": _null(STR),
            "outcome": {"type": "string", "enum": list(r.OUTCOMES)},
            "response_code": _null(STR), "technical": BOOL, "in_doubt": BOOL, "late": BOOL,
            "resolution": _null(STR), "ts": TIME, "started_at": _null(TIME),
            "amount_minor": _null(INT), "currency": _null(STR), "latency_ms": _null(NUM),
            "failed": BOOL, "cause": _null(CAUSE),
            "confidence": _null({"type": "number", "minimum": 0, "maximum": 1}),
            "evidence": {"type": "array", "items": _ref("Evidence")},
            "action": _null(STR), "attributed_at": _null(TIME), "incident_id": _null(INT),
        }
    )  # fmt: skip
    incident = _obj(
        {
            "id": INT, "kind": {"type": "string", "enum": list(r.INCIDENT_KINDS)},
            "cause": STR,
            "scope": {"type": "string", "enum": ["store", "acquirer", "device", "terminal"]},
            "store_id": _null(STR), "acquirer": _null(STR), "terminal_id": _null(STR),
            "device": _null(STR), "title": STR, "action": STR,
            "state": {"type": "string", "enum": ["open", "closed"]},
            "started_at": TIME, "ended_at": _null(TIME), "last_seen_at": TIME,
            "opened_at": TIME, "closed_at": _null(TIME),
            "terminals": {"type": "array", "items": STR},
            "failed_count": COUNT, "in_doubt_count": COUNT,
        }
    )  # fmt: skip
    probe = _obj(
        {
            "probe": STR, "target": STR, "role": STR, "acquirer": _null(STR),
            "state": {"type": "string", "enum": ["ok", "fail"]}, "error": _null(STR),
            "since": TIME, "last_ts": TIME, "loss_pct": _null(NUM), "rtt_avg_ms": _null(NUM),
        }
    )  # fmt: skip
    device = _obj(
        {
            "device": STR, "device_kind": STR, "state": STR,
            "flags": {"type": "array", "items": STR}, "reason": _null(STR),
            "since": TIME, "last_ts": TIME, "attributes": {"type": "object"},
        }
    )  # fmt: skip
    terminal_item = _obj(
        {
            "terminal_id": STR, "store_id": STR, "state": STATE, "last_seen": TIME,
            "agent_version": STR, "failed_24h": COUNT, "in_doubt": COUNT,
        }
    )  # fmt: skip
    terminal = _obj(
        {
            "terminal_id": STR, "store_id": STR, "agent_id": STR, "agent_version": STR,
            "state": STATE, "first_seen": TIME, "last_seen": TIME,
            "last_event_ts": _null(TIME), "spool_backlog": _null(COUNT),
            "clock_offset_ms": _null(NUM), "clock_ts": _null(TIME),
            "host": _null({"type": "object", "description": "the last host_sample event"}),
            "host_ts": _null(TIME),
            "probes": {"type": "array", "items": _ref("Probe")},
            "devices": {"type": "array", "items": _ref("Device")},
            "recent_failures": {"type": "array", "items": _ref("Transaction"), "maxItems": 20},
            "in_doubt": COUNT,
            "open_incidents": {"type": "array", "items": _ref("Incident")},
        }
    )  # fmt: skip
    timeline_item = _obj(
        {
            "event_id": STR, "kind": STR, "ts": TIME, "received_at": TIME, "summary": STR,
            "event": {"type": "object", "description": "the event as the agent sent it"},
        }
    )  # fmt: skip
    counts = {s: COUNT for s in r.STATES}
    store = _obj(
        {"store_id": STR, "terminals": COUNT, **counts, "failed_24h": COUNT, "in_doubt": COUNT,
         "open_incidents": COUNT}
    )  # fmt: skip
    fleet = _obj(
        {
            "generated_at": TIME,
            "terminals": _obj({"total": COUNT, **counts}),
            "failed_payments": _obj(
                {
                    "since": TIME,
                    "total": COUNT,
                    "by_cause": _obj({c: COUNT for c in r.CAUSES}),
                    "unattributed": COUNT,
                }
            ),
            "in_doubt": COUNT,
            "open_incidents": COUNT,
            "correlator": {
                "type": "object",
                "properties": {"available": BOOL},
                "required": ["available"],
                "description": "the correlator's status; available false when it is not running",
            },
            "stores": {"type": "array", "items": _ref("StoreSummary")},
            "stores_total": COUNT,
        }
    )
    error = {
        "type": "object",
        "properties": {"error": STR, "field": STR},
        "required": ["error"],
    }
    ack = {
        "type": "object",
        "properties": {
            "acked": {"type": "array", "items": INT},
            "stored": COUNT,
            "duplicates": COUNT,
        },
        "required": ["acked"],
    }
    return {
        "Error": error,
        "Evidence": evidence,
        "Transaction": txn,
        "TransactionPage": _page("Transaction"),
        "Incident": incident,
        "IncidentPage": _page("Incident"),
        "Probe": probe,
        "Device": device,
        "TerminalItem": terminal_item,
        "TerminalPage": _page("TerminalItem"),
        "Terminal": terminal,
        "TimelineItem": timeline_item,
        "TimelinePage": _page("TimelineItem"),
        "StoreSummary": store,
        "Fleet": fleet,
        "Ack": ack,
    }


def _report_schemas() -> dict[str, JSON]:
    """The wire protocol's report schema, its ``$defs`` moved into components."""
    schema = copy.deepcopy(build_schema())
    defs: dict[str, JSON] = schema.pop("$defs", {})
    for key in ("$schema", "$id"):
        schema.pop(key, None)

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: rewrite(v) for k, v in node.items()}
            ref = out.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                out["$ref"] = "#/components/schemas/Report" + ref.removeprefix("#/$defs/")
            return out
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    out = {"Report": rewrite(schema)}
    out.update({f"Report{name}": rewrite(body) for name, body in defs.items()})
    return out


def _error(description: str) -> JSON:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _ok(schema: str, description: str) -> JSON:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_READ_ERRORS = {
    "400": {"$ref": "#/components/responses/BadParameter"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Forbidden"},
    "503": {"$ref": "#/components/responses/Unavailable"},
}
_NOT_FOUND = {"404": {"$ref": "#/components/responses/NotFound"}}


def _q(name: str, description: str, schema: JSON | None = None) -> JSON:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string", "minLength": 1, "maxLength": 128},
    }


def _enum(values: tuple[str, ...]) -> JSON:
    return {"type": "string", "enum": list(values)}


def _time_param(name: str, what: str) -> JSON:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": f"{what} (ISO 8601 with a zone, e.g. 2026-03-01T12:00:00Z)",
        "schema": TIME,
    }


def _path(name: str, description: str, schema: JSON) -> JSON:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema}  # fmt: skip


_LIMIT = {"$ref": "#/components/parameters/limit"}
_CURSOR = {"$ref": "#/components/parameters/cursor"}
_SINCE = {"$ref": "#/components/parameters/since"}
_UNTIL = {"$ref": "#/components/parameters/until"}
_TERMINAL_ID = _path(
    "terminal_id", "the terminal's id", {"type": "string", "minLength": 1, "maxLength": 128}
)


def _get(summary: str, description: str, params: list[JSON], ok: JSON, *extra: JSON) -> JSON:
    responses: JSON = {"200": ok, **_READ_ERRORS}
    for more in extra:
        responses.update(more)
    return {
        "get": {
            "summary": summary,
            "description": description,
            "security": [{"bearer": []}],
            "parameters": params,
            "responses": responses,
        }
    }


def _paths() -> JSON:
    p = r.PREFIX
    return {
        f"{p}/reports": {
            "post": {
                "summary": "Upload an agent's report",
                "description": (
                    "An agent token uploads its terminal's events (gzip allowed with"
                    " Content-Encoding: gzip). The answer acknowledges every seq that is stored."
                ),
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Report")}},
                },
                "responses": {
                    "200": _ok("Ack", "stored; every seq of the report is durable"),
                    "400": _error("malformed report; field names the problem"),
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "403": _error("not an agent token, or a report from another terminal"),
                    "413": _error("body larger than the collector accepts"),
                    "415": _error("unsupported content encoding"),
                    "503": {"$ref": "#/components/responses/Unavailable"},
                },
            }
        },
        f"{p}/fleet": _get(
            "The fleet at a glance",
            "Terminals by state, failed payments of the last 24 h by cause, payments in"
            " doubt, open incidents, the correlator's status, and stores worst first.",
            [
                _q(
                    "stores",
                    "how many stores to list (worst first)",
                    {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
                )
            ],
            _ok("Fleet", "the fleet"),
        ),
        f"{p}/terminals": _get(
            "Terminals",
            "Terminals ordered by id, with state, failed payments of the last 24 h and"
            " payments in doubt.",
            [
                _q("store", "only this store's terminals"),
                _q("state", "only terminals in this state", _enum(r.STATES)),
                _LIMIT,
                _CURSOR,
            ],
            _ok("TerminalPage", "a page of terminals"),
        ),
        f"{p}/terminals/{{terminal_id}}": _get(
            "One terminal's current state",
            "Probes, devices, host, clock offset, spool backlog, last seen, the 20 newest"
            " failed payments, payments in doubt and open incidents that concern it.",
            [_TERMINAL_ID],
            _ok("Terminal", "the terminal"),
            _NOT_FOUND,
        ),
        f"{p}/terminals/{{terminal_id}}/timeline": _get(
            "One terminal's events",
            "The terminal's stored events, newest first, each with a one-line summary.",
            [
                _TERMINAL_ID,
                _SINCE,
                _UNTIL,
                _q(
                    "kind",
                    "comma-separated event kinds, e.g. txn,probe_change",
                    {"type": "string", "pattern": "^[a-z_]+(,[a-z_]+)*$"},
                ),
                _LIMIT,
                _CURSOR,
            ],
            _ok("TimelinePage", "a page of events"),
            _NOT_FOUND,
        ),
        f"{p}/transactions": _get(
            "Payments with their cause",
            "Payments newest first. Failed ones carry cause, confidence, evidence and"
            " action. in_doubt=true lists payments still in doubt (not yet resolved).",
            [
                _q("terminal", "only this terminal"),
                _q("store", "only this store"),
                _q(
                    "acquirer",
                    "only this acquirer",
                    {"type": "string", "minLength": 1, "maxLength": 256},
                ),
                _q("outcome", "only this outcome", _enum(r.OUTCOMES)),
                _q("cause", "only failed payments with this cause", _enum(r.CAUSES)),
                _q("in_doubt", "true: still in doubt; false: not in doubt", BOOL),
                _q("failed", "true: failed payments (timeouts, errors, technical declines)", BOOL),
                _SINCE,
                _UNTIL,
                _LIMIT,
                _CURSOR,
            ],
            _ok("TransactionPage", "a page of payments"),
        ),
        f"{p}/incidents": _get(
            "Incidents",
            "Incidents newest first (by start). since/until select incidents that overlap"
            " the range; store also matches incidents that hit a terminal of the store.",
            [
                _q("state", "open, closed or all (default)", _enum(r.INCIDENT_STATES)),
                _q("kind", "payments or health", _enum(r.INCIDENT_KINDS)),
                _q("cause", "only this cause", _enum(r.CAUSES)),
                _q("store", "only this store"),
                _q(
                    "acquirer",
                    "only this acquirer",
                    {"type": "string", "minLength": 1, "maxLength": 256},
                ),
                _SINCE,
                _UNTIL,
                _LIMIT,
                _CURSOR,
            ],
            _ok("IncidentPage", "a page of incidents"),
        ),
        f"{p}/incidents/{{incident_id}}": _get(
            "One incident",
            "One incident by id.",
            [_path("incident_id", "the incident's id", {"type": "integer", "minimum": 0})],
            _ok("Incident", "the incident"),
            _NOT_FOUND,
        ),
        f"{p}/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "the OpenAPI document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Is the collector's database answering?",
                "security": [],
                "responses": {
                    "200": _ok("Health", "the database answers"),
                    "503": _ok("Health", "the database does not answer"),
                },
            }
        },
    }


_METRICS: JSON = {
    "get": {
        "summary": "Prometheus metrics",
        "description": "Terminals by state, failed payments by cause, open incidents, ingest"
        " counters, in the Prometheus text format.",
        "security": [],
        "responses": {
            "200": {"description": "the metrics", "content": {"text/plain": {"schema": STR}}}
        },
    }
}


def document(served: frozenset[str] = frozenset()) -> JSON:
    """The OpenAPI document; ``/metrics`` is in it when ``served`` has that path."""
    doc = _document()
    if "/metrics" not in served:
        return doc
    return {**doc, "paths": {**doc["paths"], "/metrics": _METRICS}}


@functools.cache
def _document() -> JSON:
    """The document's fixed part (built once; callers must not change it)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "posmon collector API",
            "version": VERSION,
            "description": (
                "Agents upload reports; people and tools read the fleet, terminals, payments"
                " with their cause, and incidents. Read endpoints need a viewer token"
                " (posmon-collector token create --db PATH --viewer NAME). Lists are"
                " paginated with limit and an opaque cursor (next_cursor)."
            ),
        },
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "a posmon token"}
            },
            "parameters": {
                "limit": _q(
                    "limit",
                    "items per page",
                    {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                ),
                "cursor": _q(
                    "cursor",
                    "next_cursor of the previous page",
                    {"type": "string", "minLength": 1, "maxLength": 1024},
                ),
                "since": _time_param("since", "from this time"),
                "until": _time_param("until", "up to this time"),
            },
            "responses": {
                "BadParameter": _error("a query parameter is wrong; field names it"),
                "Unauthorized": _error("no token, or an unknown one"),
                "Forbidden": _error("an agent token; reading needs a viewer token"),
                "NotFound": _error("no such terminal or incident"),
                "Unavailable": _error("the database does not answer; retry later"),
            },
            "schemas": {
                **_schemas(),
                "Health": {
                    "type": "object",
                    "properties": {"status": STR, "error": STR},
                    "required": ["status"],
                },
                **_report_schemas(),
            },
        },
    }
