"""The evidence reader: what the stored events say around one failed payment.

Two readers, SQL reads only (they run on the storage writer's connection and
never write):

- :func:`observations` reads the payment's terminal from
  ``settings.before_s`` before the payment started to ``settings.after_s``
  after it ended, and turns the events into compact, frozen
  :class:`Observations`: probe spans (a ``probe_window`` covers
  ``[ts - window_s, ts]``; a ``probe_change`` holds from its ``ts`` — the
  first attempt of the streak — to the probe's next change), device spans
  (a ``device_status`` holds until the device's next status), host samples,
  agent starts, and the restart the payment was recorded after (an agent that
  lost power records the payments still open as timeouts when it starts
  again). For the store-level roles (gateway, isp, dns) this terminal does
  not probe itself, the other terminals of its store are read too.
- :func:`fleet_peers` reads the ``txns`` table: one failed payment per other
  store to the same acquirer within ``±fleet_window_s`` whose own (local)
  cause leaves the acquirer as the suspect.

Every observation keeps the stored event it came from (:class:`Ref`), so a
verdict can cite it. The pure rules that decide on them are in
:mod:`collector.correlate.rules`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from collector.settings import AttributionSettings
from protocol import format_datetime

from .model import TxnRow, event_id

#: The store-level probe roles a neighbour terminal may stand in for.
STORE_ROLES = frozenset({"gateway", "isp", "dns"})
#: Local causes that leave the acquirer as the suspect (the fleet rule counts these).
FLEET_CAUSES = frozenset({"acquirer_path", "acquirer_outage", "unknown"})
#: A device's last status may be this much older than the read range (its heartbeat).
DEVICE_LOOKBACK_S = 600
#: At most this many other terminals of a store are read.
MAX_NEIGHBOURS = 16
#: The agent records a payment still open at a restart within this many events of the start.
RESTART_SEQ_WINDOW = 64
#: The first host sample after a restart is looked for within this many events.
HOST_AFTER_START_SEQS = 1000
#: At most this many other stores are read for the fleet rule (one failure each).
MAX_PEER_ROWS = 20_000
#: A host sample is taken to cover this long before its ts (one default window).
HOST_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Ref:
    """The stored event an observation came from."""

    event_id: str
    kind: str
    ts: datetime
    terminal_id: str


@dataclass(frozen=True, slots=True)
class ProbeSpan:
    """A probe's state over ``[start, end]`` (one window, or one streak of a change)."""

    ref: Ref
    probe: str  # icmp, tcp, dns, tls, http, ntp, link, wifi
    target: str
    role: str
    acquirer: str | None
    start: datetime
    end: datetime
    failing: bool
    error: str | None  # a window's most frequent error; a change's error
    errors: tuple[str, ...] = ()  # every error code seen
    loss_pct: float | None = None  # windows only
    window_s: float | None = None  # windows only
    clock_offset_ms: float | None = None  # ntp windows


@dataclass(frozen=True, slots=True)
class DeviceSpan:
    """A device's reported state over ``[start, end]``."""

    ref: Ref
    device: str
    device_kind: str
    state: str  # ok | warning | fault | disconnected
    flags: tuple[str, ...]
    reason: str | None
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class HostObs:
    """One host sample, taken to cover ``[start, end]``."""

    ref: Ref
    start: datetime
    end: datetime
    cpu_pct: float
    mem_pct: float
    disk_pct: float
    boot_time: datetime


@dataclass(frozen=True, slots=True)
class AgentStart:
    """The agent started (after a clean or an unclean stop)."""

    ref: Ref
    unclean: bool


@dataclass(frozen=True, slots=True)
class Observations:
    """Everything the rules may use about one payment."""

    probes: tuple[ProbeSpan, ...] = ()
    devices: tuple[DeviceSpan, ...] = ()
    hosts: tuple[HostObs, ...] = ()
    starts: tuple[AgentStart, ...] = ()
    #: the agent start this payment was recorded after (it was still open when the agent stopped)
    recorded_after: AgentStart | None = None

    def refs(self) -> frozenset[str]:
        """The event ids of every observation (a verdict cites only these and the payment)."""
        items: list[Ref] = [p.ref for p in self.probes]
        items += [d.ref for d in self.devices]
        items += [h.ref for h in self.hosts]
        items += [s.ref for s in self.starts]
        if self.recorded_after is not None:
            items.append(self.recorded_after.ref)
        return frozenset(r.event_id for r in items)


@dataclass(frozen=True, slots=True)
class PeerFailure:
    """A failed payment of another store (``ref`` is its txn event)."""

    ref: Ref
    store_id: str
    txn_id: str
    acquirer: str
    outcome: str
    local_cause: str


@dataclass(frozen=True, slots=True)
class FleetPeers:
    """Other stores' failures to the payment's acquirer, one per store, nearest first."""

    acquirer: str | None
    failures: tuple[PeerFailure, ...] = ()


# --- reading ------------------------------------------------------------------------------

_EVENT_COLUMNS = "agent_id, seq, terminal_id, kind, ts, body"
_OWN_EVENTS = f"""
SELECT {_EVENT_COLUMNS} FROM events
WHERE terminal_id = ? AND ts >= ? AND ts <= ?
  AND (kind = 'device_status' OR
       (ts >= ? AND kind IN ('probe_window', 'probe_change', 'host_sample', 'agent_event')))
ORDER BY ts, agent_id, seq
"""
_NEIGHBOURS = """
SELECT terminal_id FROM terminals WHERE store_id = ? AND terminal_id != ?
ORDER BY terminal_id LIMIT ?
"""
_NEIGHBOUR_EVENTS = f"""
SELECT {_EVENT_COLUMNS} FROM events
WHERE terminal_id = ? AND store_id = ? AND ts >= ? AND ts <= ?
  AND kind IN ('probe_window', 'probe_change')
ORDER BY ts, agent_id, seq
"""
_AGENT_EVENTS_BEFORE = f"""
SELECT {_EVENT_COLUMNS} FROM events
WHERE agent_id = ? AND seq < ? AND seq >= ? AND kind = 'agent_event'
ORDER BY seq DESC
"""
_HOST_AFTER = f"""
SELECT {_EVENT_COLUMNS} FROM events
WHERE agent_id = ? AND seq > ? AND seq <= ? AND kind = 'host_sample'
ORDER BY seq LIMIT 1
"""
#: The stores with a counted failure to the acquirer in the minutes of the window (the
#: schema's triggers keep ``fleet_minutes`` from ``txns``) ...
_PEER_STORES = """
SELECT DISTINCT store_id FROM fleet_minutes
WHERE acquirer = ? AND minute >= ? AND minute <= ? AND store_id != ?
"""
#: ... and each one's nearest such failure on either side (index ``txns_fleet``).
_PEER_NEAREST = """
SELECT store_id, terminal_id, txn_id, agent_id, seq, ts, outcome, local_cause FROM txns
WHERE acquirer = ? AND store_id = ? AND failed = 1
  AND local_cause IN ('acquirer_path', 'acquirer_outage', 'unknown') AND ts >= ? AND ts <= ?
ORDER BY ts {order}, terminal_id {order}, txn_id {order} LIMIT 1
"""

Row = tuple[str, int, str, str, str, str]


def parse_ts(text: str) -> datetime:
    """A stored ISO 8601 UTC time (``...Z``) as an aware datetime."""
    return datetime.fromisoformat(text)


def read_bounds(txn: TxnRow, settings: AttributionSettings) -> tuple[datetime, datetime]:
    """The outer bound of what is read about ``txn``."""
    return (
        txn.begin - timedelta(seconds=settings.before_s),
        txn.ts + timedelta(seconds=settings.after_s),
    )


def observations(
    conn: sqlite3.Connection, txn: TxnRow, settings: AttributionSettings
) -> Observations:
    """What the events of ``txn``'s terminal (and its store's other terminals) say."""
    lower, upper = read_bounds(txn, settings)
    lo, hi = format_datetime(lower), format_datetime(upper)
    device_lo = format_datetime(lower - timedelta(seconds=DEVICE_LOOKBACK_S))
    own = conn.execute(_OWN_EVENTS, (txn.terminal_id, device_lo, hi, lo)).fetchall()
    parsed = [(row, orjson.loads(row[5])) for row in own]

    probe_rows = [(r, b) for r, b in parsed if r[3] in ("probe_window", "probe_change")]
    own_roles = {str(b.get("role")) for _, b in probe_rows}
    missing = STORE_ROLES - own_roles
    if missing:
        for neighbour in _neighbours(conn, txn):
            rows = conn.execute(_NEIGHBOUR_EVENTS, (neighbour, txn.store_id, lo, hi)).fetchall()
            probe_rows += [(r, b) for r in rows if (b := orjson.loads(r[5])).get("role") in missing]

    starts = tuple(_start(r, b) for r, b in parsed if _is_start(r, b))
    recorded_after, after_host = _recorded_after(conn, txn)
    hosts = [_host(r, b) for r, b in parsed if r[3] == "host_sample"]
    if after_host is not None and all(h.ref != after_host.ref for h in hosts):
        hosts.append(after_host)
    return Observations(
        probes=_probe_spans(probe_rows, settings, upper),
        devices=_device_spans([(r, b) for r, b in parsed if r[3] == "device_status"], upper),
        hosts=tuple(hosts),
        starts=starts,
        recorded_after=recorded_after,
    )


def fleet_peers(conn: sqlite3.Connection, txn: TxnRow, settings: AttributionSettings) -> FleetPeers:
    """One failed payment per other store to ``txn``'s acquirer near it, nearest first.

    Only failures whose local cause is acquirer_path, acquirer_outage or
    unknown are read: a store whose own network explains its failures says
    nothing about the acquirer. Payments not yet attributed are not counted.
    """
    if txn.acquirer is None:
        return FleetPeers(acquirer=None)
    window = timedelta(seconds=settings.fleet_window_s)
    low, mid, high = (format_datetime(t) for t in (txn.ts - window, txn.ts, txn.ts + window))
    stores = conn.execute(
        _PEER_STORES, (txn.acquirer, low[:16], high[:16], txn.store_id)
    ).fetchall()
    nearest: dict[str, tuple[float, PeerFailure]] = {}
    for (store_id,) in stores[:MAX_PEER_ROWS]:
        # the earlier one first: of two as near, the earlier is kept
        for order, bounds in (("DESC", (low, mid)), ("ASC", (mid, high))):
            row = conn.execute(
                _PEER_NEAREST.format(order=order), (txn.acquirer, store_id, *bounds)
            ).fetchone()
            if row is None:
                continue
            _, terminal_id, txn_id, agent_id, seq, ts_text, outcome, local_cause = row
            ts = parse_ts(ts_text)
            distance = abs((ts - txn.ts).total_seconds())
            known = nearest.get(store_id)
            if known is not None and known[0] <= distance:
                continue
            ref = Ref(event_id(agent_id, seq), "txn", ts, terminal_id)
            nearest[store_id] = (
                distance,
                PeerFailure(ref, store_id, txn_id, txn.acquirer, outcome, local_cause),
            )
    ordered = sorted(nearest.values(), key=lambda item: (item[0], item[1].store_id))
    return FleetPeers(acquirer=txn.acquirer, failures=tuple(f for _, f in ordered))


# --- helpers ------------------------------------------------------------------------------


def _neighbours(conn: sqlite3.Connection, txn: TxnRow) -> list[str]:
    rows = conn.execute(_NEIGHBOURS, (txn.store_id, txn.terminal_id, MAX_NEIGHBOURS)).fetchall()
    return [str(r[0]) for r in rows]


def _ref(row: Row) -> Ref:
    agent_id, seq, terminal_id, kind, ts, _ = row
    return Ref(event_id(agent_id, seq), kind, parse_ts(ts), terminal_id)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _probe_key(row: Row, body: Mapping[str, Any]) -> tuple[str, ...]:
    return (
        row[2],
        str(body.get("probe")),
        str(body.get("target")),
        str(body.get("role")),
        str(body.get("acquirer")),
    )


def _probe_spans(
    rows: Iterable[tuple[Row, Mapping[str, Any]]], settings: AttributionSettings, upper: datetime
) -> tuple[ProbeSpan, ...]:
    spans: list[ProbeSpan] = []
    changes: dict[tuple[str, ...], list[tuple[Row, Mapping[str, Any]]]] = {}
    for row, body in rows:
        if row[3] == "probe_change":
            changes.setdefault(_probe_key(row, body), []).append((row, body))
        else:
            spans.append(_window_span(row, body, settings))
    for streak in changes.values():
        streak.sort(key=lambda item: (item[0][4], item[0][1]))
        for i, (row, body) in enumerate(streak):
            ref = _ref(row)
            end = _ref(streak[i + 1][0]).ts if i + 1 < len(streak) else upper
            error = body.get("error")
            spans.append(
                ProbeSpan(
                    ref=ref,
                    probe=str(body.get("probe")),
                    target=str(body.get("target")),
                    role=str(body.get("role")),
                    acquirer=body.get("acquirer"),
                    start=ref.ts,
                    end=max(end, ref.ts),
                    failing=body.get("state") == "fail",
                    error=error,
                    errors=(error,) if error else (),
                )
            )
    spans.sort(key=lambda s: (s.start, s.ref.event_id))
    return tuple(spans)


def _window_span(row: Row, body: Mapping[str, Any], settings: AttributionSettings) -> ProbeSpan:
    ref = _ref(row)
    window_s = _float(body.get("window_s")) or 0.0
    loss = _float(body.get("loss_pct")) or 0.0
    errors: Mapping[str, Any] = body.get("errors") or {}
    ranked = sorted(errors.items(), key=lambda kv: (-int(kv[1]), kv[0]))
    extras: Mapping[str, Any] = body.get("extras") or {}
    return ProbeSpan(
        ref=ref,
        probe=str(body.get("probe")),
        target=str(body.get("target")),
        role=str(body.get("role")),
        acquirer=body.get("acquirer"),
        start=ref.ts - timedelta(seconds=window_s),
        end=ref.ts,
        failing=loss >= settings.loss_fail_pct,
        error=ranked[0][0] if ranked else None,
        errors=tuple(code for code, _ in ranked),
        loss_pct=loss,
        window_s=window_s,
        clock_offset_ms=_float(extras.get("clock_offset_ms")),
    )


def _device_spans(
    rows: list[tuple[Row, Mapping[str, Any]]], upper: datetime
) -> tuple[DeviceSpan, ...]:
    by_device: dict[str, list[tuple[Row, Mapping[str, Any]]]] = {}
    for row, body in rows:
        by_device.setdefault(str(body.get("device")), []).append((row, body))
    spans: list[DeviceSpan] = []
    for statuses in by_device.values():
        for i, (row, body) in enumerate(statuses):
            ref = _ref(row)
            end = _ref(statuses[i + 1][0]).ts if i + 1 < len(statuses) else upper
            spans.append(
                DeviceSpan(
                    ref=ref,
                    device=str(body.get("device")),
                    device_kind=str(body.get("device_kind")),
                    state=str(body.get("state")),
                    flags=tuple(str(f) for f in body.get("flags") or ()),
                    reason=body.get("reason"),
                    start=ref.ts,
                    end=max(end, ref.ts),
                )
            )
    spans.sort(key=lambda s: (s.start, s.ref.event_id))
    return tuple(spans)


def _host(row: Row, body: Mapping[str, Any]) -> HostObs:
    ref = _ref(row)
    return HostObs(
        ref=ref,
        start=ref.ts - timedelta(seconds=HOST_WINDOW_S),
        end=ref.ts,
        cpu_pct=_float(body.get("cpu_pct")) or 0.0,
        mem_pct=_float(body.get("mem_pct")) or 0.0,
        disk_pct=_float(body.get("disk_pct")) or 0.0,
        boot_time=parse_ts(str(body.get("boot_time"))),
    )


def _is_start(row: Row, body: Mapping[str, Any]) -> bool:
    return row[3] == "agent_event" and body.get("event") == "start"


def _start(row: Row, body: Mapping[str, Any]) -> AgentStart:
    details: Mapping[str, Any] = body.get("details") or {}
    return AgentStart(_ref(row), unclean=details.get("previous_stop") == "unclean")


def _recorded_after(
    conn: sqlite3.Connection, txn: TxnRow
) -> tuple[AgentStart | None, HostObs | None]:
    """The agent start ``txn`` was recorded after, and the first host sample after it.

    The agent records a payment that was still open when it stopped as a
    timeout right after it starts again: the payment's event then comes a few
    seqs after a start event dated after the payment began.
    """
    rows = conn.execute(
        _AGENT_EVENTS_BEFORE, (txn.agent_id, txn.seq, txn.seq - RESTART_SEQ_WINDOW)
    ).fetchall()
    for row in rows:
        body = orjson.loads(row[5])
        if not _is_start(row, body):
            continue
        start = _start(row, body)
        if start.ref.ts <= txn.begin:
            return None, None
        host_row = conn.execute(
            _HOST_AFTER, (txn.agent_id, row[1], row[1] + HOST_AFTER_START_SEQS)
        ).fetchone()
        host = _host(host_row, orjson.loads(host_row[5])) if host_row is not None else None
        return start, host
    return None, None
