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

While it applies them, it tells which evidence events are *signals*: the ones
that may change a verdict already made (:class:`Signal`; the reasoning is in
:mod:`.txns`). An event is compared with the state before it (and with the
batch's earlier events): a failing probe window or a starved host sample is a
signal; so is a change (a probe changing state, a device whose rule-relevant
state changed, a new boot), an agent start, and anything that arrives out of
order (older than the state already held), which may cut a span short. A
heartbeat that repeats the state in order is not.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

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


#: Why an evidence event may change a verdict already made.
Reason = Literal["failing", "change", "late", "first", "anchor", "restart"]

#: UPS flags that mean the mains failed (rules.POWER_FLAGS; repeated: rules imports evidence).
_POWER_FLAGS: Final = frozenset(
    {"on_battery", "battery_low", "low_battery", "shutdown_active", "shutdown_imminent"}
)
_PINPAD_KINDS: Final = frozenset({"ecr_pinpad", "pinpad"})
_MODEM_KINDS: Final = frozenset({"at_modem"})
_MODEM_DOWN_FLAGS: Final = frozenset(
    {"no_sim", "sim_locked", "sim_error", "not_registered", "registration_denied", "no_signal"}
)
#: A device heard again after this long (the same state) is a signal: the evidence reader
#: looks 600 s (evidence.DEVICE_LOOKBACK_S) before a payment's range for a device's status.
DEVICE_SILENCE_S: Final = 300.0
#: A host sample this soon after boot may be the evidence of a reboot.
FRESH_BOOT_S: Final = 3600.0
#: Boot times closer than this are the same boot (psutil's boot time jitters).
_SAME_BOOT_S: Final = 60.0
#: Probe roles whose healthy windows anchor an acquirer verdict (rules.healthy_anchor).
ANCHOR_ROLES: Final = frozenset({"isp", "collector"})


@dataclass(frozen=True, slots=True)
class Signal:
    """An evidence event that may change verdicts already made, and why."""

    event: StoredEvent
    reason: Reason
    #: device_status: the rule-relevant causes of the device before and after the event
    causes: frozenset[str] = frozenset()


@dataclass(slots=True)
class Applied:
    """What applying a batch of events did."""

    #: (terminal, device) whose state an event touched
    devices: set[tuple[str, str]] = field(default_factory=set)
    signals: list[Signal] = field(default_factory=list)


def device_causes(device_kind: str, state: str, flags: Iterable[str]) -> frozenset[str]:
    """The causes the rules may read from a device in this state (empty: nothing to blame)."""
    flags = frozenset(flags)
    out = set()
    if _POWER_FLAGS & flags:
        out.add("power")
    if device_kind in _PINPAD_KINDS and state in ("fault", "disconnected"):
        out.add("device")
    if device_kind in _MODEM_KINDS and _MODEM_DOWN_FLAGS & flags:
        out.add("link")
    return frozenset(out)


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


def _seconds(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def starved(body: Mapping[str, Any], settings: AttributionSettings) -> bool:
    """A host sample at or past the starvation thresholds (rules._host)."""
    return (
        (_number(body.get("cpu_pct")) or 0.0) >= settings.cpu_starved_pct
        or (_number(body.get("mem_pct")) or 0.0) >= settings.mem_starved_pct
        or (_number(body.get("disk_pct")) or 0.0) >= settings.disk_full_pct
    )


def _host_signals(
    conn: sqlite3.Connection,
    events: Iterable[StoredEvent],
    settings: AttributionSettings,
    out: list[Signal],
) -> None:
    """Starved samples; the first sample of a new boot; out-of-order starved or fresh ones.

    A sample that is neither starved nor shows a boot the terminal's newest sample
    did not already show says nothing the rules read (rules._power, rules._host).
    """
    held: dict[str, tuple[str, float | None]] = {}  # terminal -> (host_ts, boot time)
    for ev in events:
        if ev.kind != "host_sample":
            continue
        if ev.terminal_id not in held:
            row = conn.execute(
                "SELECT host, host_ts FROM terminals WHERE terminal_id = ?", (ev.terminal_id,)
            ).fetchone()
            boot = None
            if row is not None and row[0]:
                try:
                    boot = _seconds(json.loads(row[0]).get("boot_time"))
                except (ValueError, AttributeError):
                    boot = None
            held[ev.terminal_id] = (row[1] or "" if row is not None else "", boot)
        host_ts, boot = held[ev.terminal_id]
        uptime = _number(ev.body.get("uptime_s"))
        fresh = uptime is not None and uptime <= FRESH_BOOT_S
        is_starved = starved(ev.body, settings)
        if ev.ts < host_ts:  # late: it may fall anywhere in the history
            if fresh:
                out.append(Signal(ev, "restart"))
            elif is_starved:
                out.append(Signal(ev, "late"))
            continue
        new_boot = _seconds(ev.body.get("boot_time"))
        if fresh and (boot is None or new_boot is None or abs(new_boot - boot) > _SAME_BOOT_S):
            out.append(Signal(ev, "restart"))
        elif is_starved:
            out.append(Signal(ev, "failing"))
        held[ev.terminal_id] = (ev.ts, new_boot if new_boot is not None else boot)


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


def _probe_signal(ev: StoredEvent, settings: AttributionSettings) -> Signal | None:
    """Every change is a signal (it starts or ends a span; late, it may cut one short).

    A window is a span of its own (``[ts - window_s, ts]``) and cuts nothing short,
    so its order does not matter: it is a signal when failing (or its clock offset
    is past the limit), or, healthy, as an internet anchor (an acquirer verdict
    made without one is more confident with it); else it adds nothing.
    """
    b = ev.body
    if ev.kind == "probe_change":
        return Signal(ev, "failing" if b.get("state") == "fail" else "change")
    extras = b.get("extras")
    offset = _number(extras.get("clock_offset_ms")) if isinstance(extras, dict) else None
    loss = _number(b.get("loss_pct")) or 0.0
    if loss >= settings.loss_fail_pct or (
        offset is not None and abs(offset) > settings.clock_max_offset_ms
    ):
        return Signal(ev, "failing")
    if b.get("role") in ANCHOR_ROLES:
        return Signal(ev, "anchor")
    return None


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


def _apply_device(conn: sqlite3.Connection, ev: StoredEvent) -> Signal | None:
    """Apply one device_status; returns it as a signal when its rule-relevant state changed
    (:func:`device_causes`), when it is late, or when the device was silent long."""
    b = ev.body
    device = str(b.get("device", ""))
    state = str(b.get("state", "ok"))
    flags = b.get("flags") or []
    attributes = b.get("attributes") or {}
    row = conn.execute(
        "SELECT state, since, last_ts, device_kind, flags FROM device_state"
        " WHERE terminal_id = ? AND device = ?",
        (ev.terminal_id, device),
    ).fetchone()
    kind = str(b.get("device_kind", ""))
    values = (kind, state, _dumps(list(flags)), _dumps(dict(attributes)), b.get("reason"))
    causes = device_causes(kind, state, (str(f) for f in flags))
    if row is None:
        conn.execute(
            "INSERT INTO device_state (terminal_id, device, device_kind, state, flags,"
            " attributes, reason, since, last_ts) VALUES (?,?,?,?,?,?,?,?,?)",
            (ev.terminal_id, device, *values, ev.ts, ev.ts),
        )
        return Signal(ev, "first", causes) if causes else None
    old_state, since, last_ts, old_kind, old_flags = row
    old_causes = device_causes(old_kind, old_state, json.loads(old_flags or "[]"))
    signal: Signal | None = None
    if ev.ts < last_ts:
        signal = Signal(ev, "late", causes | old_causes)
    elif causes != old_causes:
        signal = Signal(ev, "change", causes | old_causes)
    elif causes and (_seconds(ev.ts) or 0.0) - (_seconds(last_ts) or 0.0) >= DEVICE_SILENCE_S:
        signal = Signal(ev, "change", causes)  # heard again after a silence: seen anew
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
    return signal


def apply_events(
    conn: sqlite3.Connection, events: Iterable[StoredEvent], settings: AttributionSettings
) -> Applied:
    """Bring the current-state tables up to ``events``; tells the devices touched and the
    signals (the events that may change verdicts already made)."""
    events = list(events)
    out = Applied()
    _host_signals(conn, events, settings, out.signals)  # before the terminals move on
    _update_terminals(conn, events)
    for ev in events:
        signal: Signal | None = None
        if ev.kind in ("probe_change", "probe_window"):
            _apply_probe(conn, ev, settings)
            signal = _probe_signal(ev, settings)
        elif ev.kind == "device_status":
            signal = _apply_device(conn, ev)
            out.devices.add((ev.terminal_id, str(ev.body.get("device", ""))))
        elif ev.kind == "agent_event" and ev.body.get("event") == "start":
            signal = Signal(ev, "restart")
        if signal is not None:
            out.signals.append(signal)
    return out
