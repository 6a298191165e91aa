"""The current-state tables the correlator keeps from the events: terminals, probes, devices.

Runs in the writer thread, inside the correlator's pass transaction. Events
arrive in insertion order (``events.rowid``), which is not event-time order: a
store that was offline uploads its backlog late. So every update here compares
event times and the newest event time wins; an older event never overwrites a
newer state.

- ``terminals``: ``last_event_ts`` (newest event time), ``host``/``host_ts``
  (the newest ``host_sample``), ``clock_offset_ms``/``clock_ts`` (the newest
  NTP window's ``extras.clock_offset_ms``).
- ``probe_state``: one row per (terminal, ``probe target role``). The state
  comes from ``probe_change`` events; a probe never heard to change takes it
  from its windows (loss at or past ``loss_fail_pct`` is failing).
- ``device_state``: one row per (terminal, device), from ``device_status``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from ..settings import AttributionSettings

#: The event kinds that are evidence (everything but payments).
EVIDENCE_KINDS: Final = frozenset(
    {"probe_window", "probe_change", "device_status", "host_sample", "agent_event"}
)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of ``events`` with its body parsed."""

    rowid: int
    agent_id: str
    seq: int
    terminal_id: str
    store_id: str
    kind: str
    ts: str  # fixed-width ISO 8601 UTC (protocol.format_datetime): compares as text
    body: Mapping[str, Any]


def read_events(conn: sqlite3.Connection, after_rowid: int, limit: int) -> list[StoredEvent]:
    """Up to ``limit`` events stored after ``after_rowid``, in insertion order."""
    rows = conn.execute(
        "SELECT rowid, agent_id, seq, terminal_id, store_id, kind, ts, body FROM events"
        " WHERE rowid > ? ORDER BY rowid LIMIT ?",
        (after_rowid, limit),
    ).fetchall()
    out = []
    for rowid, agent_id, seq, terminal_id, store_id, kind, ts, body in rows:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = {}
        out.append(
            StoredEvent(
                int(rowid),
                agent_id,
                int(seq),
                terminal_id,
                store_id,
                kind,
                ts,
                parsed if isinstance(parsed, dict) else {},
            )
        )
    return out


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# --- terminals ---------------------------------------------------------------------------


def _update_terminals(conn: sqlite3.Connection, events: Iterable[StoredEvent]) -> None:
    newest: dict[str, str] = {}
    host: dict[str, StoredEvent] = {}
    clock: dict[str, tuple[str, float]] = {}
    for ev in events:
        if ev.ts > newest.get(ev.terminal_id, ""):
            newest[ev.terminal_id] = ev.ts
        if ev.kind == "host_sample":
            best = host.get(ev.terminal_id)
            if best is None or ev.ts > best.ts:
                host[ev.terminal_id] = ev
        elif ev.kind == "probe_window":
            extras = ev.body.get("extras")
            offset = _number(extras.get("clock_offset_ms")) if isinstance(extras, dict) else None
            if offset is not None and ev.ts > clock.get(ev.terminal_id, ("", 0.0))[0]:
                clock[ev.terminal_id] = (ev.ts, offset)
    for terminal_id, ts in newest.items():
        conn.execute(
            "UPDATE terminals SET last_event_ts = ? WHERE terminal_id = ?"
            " AND (last_event_ts IS NULL OR last_event_ts < ?)",
            (ts, terminal_id, ts),
        )
    for terminal_id, ev in host.items():
        sample = {k: v for k, v in ev.body.items() if k not in ("seq", "kind")}
        conn.execute(
            "UPDATE terminals SET host = ?, host_ts = ? WHERE terminal_id = ?"
            " AND (host_ts IS NULL OR host_ts < ?)",
            (_dumps(sample), ev.ts, terminal_id, ev.ts),
        )
    for terminal_id, (ts, offset) in clock.items():
        conn.execute(
            "UPDATE terminals SET clock_offset_ms = ?, clock_ts = ? WHERE terminal_id = ?"
            " AND (clock_ts IS NULL OR clock_ts < ?)",
            (offset, ts, terminal_id, ts),
        )


# --- probes ------------------------------------------------------------------------------


def probe_key(probe: str, target: str, role: str) -> str:
    """The ``probe_state.probe_key`` of a probe."""
    return f"{probe} {target} {role}"


def _window_state(body: Mapping[str, Any], settings: AttributionSettings) -> tuple[str, str | None]:
    loss = _number(body.get("loss_pct")) or 0.0
    if loss < settings.loss_fail_pct:
        return "ok", None
    errors = body.get("errors")
    if isinstance(errors, dict) and errors:
        counts = {str(k): v if isinstance(v, int) else 0 for k, v in errors.items()}
        return "fail", max(sorted(counts), key=counts.__getitem__)
    return "fail", "loss"


def _last_window(ev: StoredEvent, state_from: str) -> str:
    b = ev.body
    return _dumps(
        {
            "loss_pct": b.get("loss_pct"),
            "rtt_avg_ms": b.get("rtt_avg_ms"),
            "sent": b.get("sent"),
            "ok": b.get("ok"),
            "errors": b.get("errors") or {},
            "extras": b.get("extras") or {},
            "window_s": b.get("window_s"),
            "ts": ev.ts,
            # "change": the state follows probe_change events; "window": none seen yet
            "state_from": state_from,
        }
    )


_PROBE_COLUMNS = "state, error, since, last_ts, last_window"


def _apply_probe(conn: sqlite3.Connection, ev: StoredEvent, settings: AttributionSettings) -> None:
    b = ev.body
    probe, target, role = str(b.get("probe", "")), str(b.get("target", "")), str(b.get("role", ""))
    acquirer = b.get("acquirer")
    key = probe_key(probe, target, role)
    row = conn.execute(
        f"SELECT {_PROBE_COLUMNS} FROM probe_state WHERE terminal_id = ? AND probe_key = ?",
        (ev.terminal_id, key),
    ).fetchone()
    if ev.kind == "probe_change":
        state = "fail" if b.get("state") == "fail" else "ok"
        error = b.get("error") if state == "fail" else None
        if row is None:
            conn.execute(
                "INSERT INTO probe_state (terminal_id, probe_key, probe, target, role, acquirer,"
                " state, error, since, last_ts, last_window) VALUES (?,?,?,?,?,?,?,?,?,?,NULL)",
                (ev.terminal_id, key, probe, target, role, acquirer, state, error, ev.ts, ev.ts),
            )
            return
        old_state, old_error, since, _last_ts, last_window = row
        window = json.loads(last_window) if last_window else None
        if window is not None and window.get("state_from") == "window":
            # from now on the changes tell the state, not the windows
            window["state_from"] = "change"
            last_window = _dumps(window)
            if state == old_state and ev.ts < since:
                since = ev.ts  # the same state, known from earlier
        if ev.ts >= since:  # a newer change than the one held (an older one changes nothing)
            old_state, old_error, since = state, error, ev.ts
        conn.execute(
            "UPDATE probe_state SET state = ?, error = ?, since = ?, last_ts = max(last_ts, ?),"
            " last_window = ?, acquirer = coalesce(?, acquirer)"
            " WHERE terminal_id = ? AND probe_key = ?",
            (old_state, old_error, since, ev.ts, last_window, acquirer, ev.terminal_id, key),
        )
        return
    # probe_window
    state, error = _window_state(b, settings)
    if row is None:
        conn.execute(
            "INSERT INTO probe_state (terminal_id, probe_key, probe, target, role, acquirer,"
            " state, error, since, last_ts, last_window) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                ev.terminal_id, key, probe, target, role, acquirer, state, error, ev.ts, ev.ts,
                _last_window(ev, "window"),
            ),
        )  # fmt: skip
        return
    old_state, old_error, since, _last_ts, last_window = row
    window = json.loads(last_window) if last_window else None
    from_window = window is not None and window.get("state_from") == "window"
    if window is not None and window.get("ts", "") > ev.ts:
        return  # a newer window is already held
    new_window = _last_window(ev, "window" if from_window else "change")
    if from_window and state != old_state and ev.ts >= since:
        old_state, old_error, since = state, error, ev.ts
    elif from_window and state == old_state:
        old_error = error
    conn.execute(
        "UPDATE probe_state SET state = ?, error = ?, since = ?, last_ts = max(last_ts, ?),"
        " last_window = ?, acquirer = coalesce(?, acquirer)"
        " WHERE terminal_id = ? AND probe_key = ?",
        (old_state, old_error, since, ev.ts, new_window, acquirer, ev.terminal_id, key),
    )


# --- devices -----------------------------------------------------------------------------


def _apply_device(conn: sqlite3.Connection, ev: StoredEvent) -> None:
    b = ev.body
    device = str(b.get("device", ""))
    state = str(b.get("state", "ok"))
    flags = b.get("flags") or []
    attributes = b.get("attributes") or {}
    row = conn.execute(
        "SELECT state, since, last_ts FROM device_state WHERE terminal_id = ? AND device = ?",
        (ev.terminal_id, device),
    ).fetchone()
    values = (
        str(b.get("device_kind", "")),
        state,
        _dumps(list(flags)),
        _dumps(dict(attributes)),
        b.get("reason"),
    )
    if row is None:
        conn.execute(
            "INSERT INTO device_state (terminal_id, device, device_kind, state, flags,"
            " attributes, reason, since, last_ts) VALUES (?,?,?,?,?,?,?,?,?)",
            (ev.terminal_id, device, *values, ev.ts, ev.ts),
        )
        return
    old_state, since, last_ts = row
    if ev.ts >= last_ts:  # the newest event wins
        new_since = since if state == old_state else ev.ts
        conn.execute(
            "UPDATE device_state SET device_kind = ?, state = ?, flags = ?, attributes = ?,"
            " reason = ?, since = ?, last_ts = ? WHERE terminal_id = ? AND device = ?",
            (*values, new_since, ev.ts, ev.terminal_id, device),
        )
    elif state == old_state and ev.ts < since:  # a late event: the state began earlier
        conn.execute(
            "UPDATE device_state SET since = ? WHERE terminal_id = ? AND device = ?",
            (ev.ts, ev.terminal_id, device),
        )


def apply_events(
    conn: sqlite3.Connection, events: Iterable[StoredEvent], settings: AttributionSettings
) -> set[tuple[str, str]]:
    """Bring the current-state tables up to ``events``; returns the (terminal, device) touched."""
    events = list(events)
    _update_terminals(conn, events)
    devices: set[tuple[str, str]] = set()
    for ev in events:
        if ev.kind in ("probe_change", "probe_window"):
            _apply_probe(conn, ev, settings)
        elif ev.kind == "device_status":
            _apply_device(conn, ev)
            devices.add((ev.terminal_id, str(ev.body.get("device", ""))))
    return devices
