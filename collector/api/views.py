"""Rows of the read API's queries as the JSON the API answers with (see the README).

Pure functions of ``sqlite3.Row``-like mappings; no I/O. Stored JSON columns
(flags, attributes, evidence, terminals, event bodies) are decoded here; a
column that does not decode is shown as empty rather than failing the page.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from collector.correlate.model import event_id

Row = Mapping[str, Any]
JSON = dict[str, Any]


def decode_json(text: str | None, default: Any) -> Any:
    if text is None:
        return default
    try:
        value = json.loads(text)
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default


def _bool(value: Any) -> bool:
    return bool(value)


def _optional_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def txn_item(row: Row) -> JSON:
    """One payment, with its cause and evidence when it failed."""
    evidence = []
    for item in decode_json(row["evidence"], []):
        if not isinstance(item, dict):
            continue
        evidence.append(
            {
                "event_id": str(item.get("event_id", item.get("id", ""))),
                "kind": item.get("kind"),
                "ts": item.get("ts"),
                "terminal_id": item.get("terminal_id", row["terminal_id"]),
                "what": item.get("what"),
            }
        )
    return {
        "terminal_id": row["terminal_id"],
        "store_id": row["store_id"],
        "txn_id": row["txn_id"],
        "txn_kind": row["txn_kind"],
        "acquirer": row["acquirer"],
        "outcome": row["outcome"],
        "response_code": row["response_code"],
        "technical": _bool(row["technical"]),
        "in_doubt": _bool(row["in_doubt"]),
        "late": _bool(row["late"]),
        "resolution": row["resolution"],
        "ts": row["ts"],
        "started_at": row["started_at"],
        "amount_minor": row["amount_minor"],
        "currency": row["currency"],
        "latency_ms": row["latency_ms"],
        "failed": _bool(row["failed"]),
        "cause": row["cause"],
        "confidence": row["confidence"],
        "evidence": evidence,
        "action": row["action"],
        "attributed_at": row["attributed_at"],
        "incident_id": row["incident_id"],
    }


def probe_item(row: Row) -> JSON:
    window = decode_json(row["last_window"], {})
    return {
        "probe": row["probe"],
        "target": row["target"],
        "role": row["role"],
        "acquirer": row["acquirer"],
        "state": row["state"],
        "error": row["error"],
        "since": row["since"],
        "last_ts": row["last_ts"],
        "loss_pct": _number(window.get("loss_pct")),
        "rtt_avg_ms": _number(window.get("rtt_avg_ms")),
    }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def device_item(row: Row) -> JSON:
    return {
        "device": row["device"],
        "device_kind": row["device_kind"],
        "state": row["state"],
        "flags": [f for f in decode_json(row["flags"], []) if isinstance(f, str)],
        "reason": row["reason"],
        "since": row["since"],
        "last_ts": row["last_ts"],
        "attributes": decode_json(row["attributes"], {}),
    }


def terminal_item(row: Row) -> JSON:
    """A terminal in the list: who, state, and how its payments fare."""
    return {
        "terminal_id": row["terminal_id"],
        "store_id": row["store_id"],
        "state": row["state"],
        "last_seen": row["last_seen"],
        "agent_version": row["agent_version"],
        "failed_24h": row["failed_24h"],
        "in_doubt": row["in_doubt"],
    }


def timeline_item(row: Row) -> JSON:
    body = decode_json(row["body"], {})
    return {
        "event_id": event_id(row["agent_id"], row["seq"]),
        "kind": row["kind"],
        "ts": row["ts"],
        "received_at": row["received_at"],
        "summary": summary(row["kind"], body),
        "event": body,
    }


# --- one line of plain words per event -----------------------------------------------------


def summary(kind: str, ev: Mapping[str, Any]) -> str:
    """What an event says, in a line a technician reads in a timeline."""
    describe = _SUMMARIES.get(kind)
    if describe is None:
        return f"{kind} event"
    try:
        return describe(ev)
    except (KeyError, TypeError, ValueError):
        return f"{kind} event"


def _probe_name(ev: Mapping[str, Any]) -> str:
    name = f"probe {ev['role']} {ev['probe']} {ev['target']}"
    return name + (f" ({ev['acquirer']})" if ev.get("acquirer") else "")


def _probe_change(ev: Mapping[str, Any]) -> str:
    text = f"{_probe_name(ev)}: {ev['state']}"
    return text + (f" ({ev['error']})" if ev.get("error") else "")


def _probe_window(ev: Mapping[str, Any]) -> str:
    text = f"{_probe_name(ev)}: {ev['ok']}/{ev['sent']} ok, {ev['loss_pct']:g} % loss"
    if ev.get("rtt_avg_ms") is not None:
        text += f", rtt {ev['rtt_avg_ms']:.1f} ms"
    errors = ev.get("errors") or {}
    if errors:
        text += " [" + ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) + "]"
    return text


def _device_status(ev: Mapping[str, Any]) -> str:
    text = f"device {ev['device']}: {ev['state']}"
    if ev.get("flags"):
        text += " [" + ", ".join(str(f) for f in ev["flags"]) + "]"
    if ev.get("reason"):
        text += f" — {ev['reason']}"
    return text + (" (heartbeat)" if ev.get("heartbeat") else "")


def _host_sample(ev: Mapping[str, Any]) -> str:
    return (
        f"host: cpu {ev['cpu_pct']:.0f} %, memory {ev['mem_pct']:.0f} %,"
        f" disk {ev['disk_pct']:.0f} %, load {ev['load1']:.2f}"
    )


def _txn(ev: Mapping[str, Any]) -> str:
    text = f"payment {ev['txn_id']}: {ev['outcome']}"
    if ev.get("response_code"):
        text += f" (code {ev['response_code']})"
    if ev.get("acquirer"):
        text += f" via {ev['acquirer']}"
    if ev.get("resolution"):
        text += f", resolved: {ev['resolution']}"
    elif ev.get("in_doubt"):
        text += ", in doubt"
    return text + (", late" if ev.get("late") else "")


def _agent_event(ev: Mapping[str, Any]) -> str:
    details = ev.get("details") or {}
    text = f"agent: {ev['event']}"
    if details:
        text += " (" + ", ".join(f"{k}={v}" for k, v in sorted(details.items())) + ")"
    return text


_SUMMARIES = {
    "probe_change": _probe_change,
    "probe_window": _probe_window,
    "device_status": _device_status,
    "host_sample": _host_sample,
    "txn": _txn,
    "agent_event": _agent_event,
}
