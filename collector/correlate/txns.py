"""Payments in the ``txns`` table: the upsert from ``txn`` events, which ones need a (new) cause,
and writing the verdicts.

One row per (terminal, ``txn_id``). A payment can have several ``txn`` events
(a timeout, then the late end, then the POS's resolution). The newest event
(by ``seq`` of the same agent) tells the outcome, ``in_doubt``, ``late`` and
``resolution``; but ``failed`` never goes back to 0: a timeout later settled
as approved still failed at the till (it is no longer in doubt), and its time
(``ts``) stays the moment it failed. Failed = outcome ``timeout`` or
``error``, or a decline with a technical response code.

A failed payment is (re)attributed when it is new or changed, when evidence
arrives that falls in the time the rules read around it (an offline store
uploading its backlog) as long as it is within ``revise_horizon_s`` of the
collector's clock, and when the fleet picture around it changed (another
store's payment to the same acquirer got a new local cause).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from protocol import format_datetime
from protocol.causes import TECHNICAL_RESPONSE_CODES

from ..settings import AttributionSettings
from . import evidence
from .model import TxnRow, Verdict
from .state import EVIDENCE_KINDS, StoredEvent

#: (terminal_id, txn_id)
TxnKey = tuple[str, str]
LocalFn = Callable[[sqlite3.Connection, TxnRow, AttributionSettings], Verdict]
FinalFn = Callable[[sqlite3.Connection, TxnRow, Verdict, AttributionSettings], Verdict]

FAILED_OUTCOMES: Final = frozenset({"timeout", "error"})
#: Local causes the fleet rule may still turn into ``acquirer_outage``.
FLEET_CAUSES: Final = frozenset({"acquirer_path", "acquirer_outage", "unknown"})

_TXN_ROW_COLUMNS = (
    "terminal_id, store_id, txn_id, agent_id, seq, ts, started_at, acquirer, outcome,"
    " response_code, technical, in_doubt"
)


def parse_ts(text: str) -> datetime:
    """A stored ISO 8601 UTC time as an aware datetime."""
    return datetime.fromisoformat(text)


def ts_text(value: datetime) -> str:
    return format_datetime(value)


def is_technical(body: Mapping[str, Any]) -> bool:
    return bool(body.get("technical")) or body.get("response_code") in TECHNICAL_RESPONSE_CODES


def is_failure(body: Mapping[str, Any]) -> bool:
    """Whether a ``txn`` event says the payment failed at the till."""
    outcome = body.get("outcome")
    return outcome in FAILED_OUTCOMES or (outcome == "declined" and is_technical(body))


def _opt_time(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return ts_text(parse_ts(value))
    except ValueError:
        return None


# --- upsert ------------------------------------------------------------------------------

_UPSERT = """
INSERT INTO txns (terminal_id, txn_id, store_id, agent_id, seq, ts, started_at, txn_kind,
                  acquirer, outcome, response_code, technical, in_doubt, late, resolution,
                  amount_minor, currency, latency_ms, failed)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (terminal_id, txn_id) DO UPDATE SET
    store_id = excluded.store_id, agent_id = excluded.agent_id, seq = excluded.seq,
    ts = excluded.ts, started_at = excluded.started_at, txn_kind = excluded.txn_kind,
    acquirer = excluded.acquirer, outcome = excluded.outcome,
    response_code = excluded.response_code, technical = excluded.technical,
    in_doubt = excluded.in_doubt, late = excluded.late, resolution = excluded.resolution,
    amount_minor = excluded.amount_minor, currency = excluded.currency,
    latency_ms = excluded.latency_ms, failed = excluded.failed
"""
_OLD_COLUMNS = (
    "store_id, agent_id, seq, ts, started_at, txn_kind, acquirer, outcome, response_code,"
    " technical, in_doubt, late, resolution, amount_minor, currency, latency_ms, failed"
)


def _event_values(ev: StoredEvent) -> dict[str, Any]:
    b = ev.body
    return {
        "store_id": ev.store_id,
        "agent_id": ev.agent_id,
        "seq": ev.seq,
        "ts": ev.ts,
        "started_at": _opt_time(b.get("started_at")),
        "txn_kind": str(b.get("txn_kind") or "sale"),
        "acquirer": b.get("acquirer"),
        "outcome": str(b.get("outcome") or "error"),
        "response_code": b.get("response_code"),
        "technical": int(is_technical(b)),
        "in_doubt": int(bool(b.get("in_doubt"))),
        "late": int(bool(b.get("late"))),
        "resolution": b.get("resolution"),
        "amount_minor": b.get("amount_minor"),
        "currency": b.get("currency"),
        "latency_ms": b.get("latency_ms"),
        "failed": int(is_failure(b)),
    }


_KEEP_IF_MISSING: Final = ("started_at", "acquirer", "amount_minor", "currency", "latency_ms")


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The row after ``new`` (one event's values) meets the stored row ``old``."""
    same_agent = old["agent_id"] == new["agent_id"]
    newer = new["seq"] > old["seq"] if same_agent else new["ts"] >= old["ts"]
    if newer:
        out = dict(new)
        for name in _KEEP_IF_MISSING:
            if out[name] is None:
                out[name] = old[name]
    else:  # an older event of the payment, arriving late: it only fills gaps
        out = dict(old)
        for name in _KEEP_IF_MISSING:
            if out[name] is None:
                out[name] = new[name]
    # failed once, failed for good; its time is when it failed
    if old["failed"] and new["failed"]:
        out["ts"] = min(old["ts"], new["ts"])
    elif old["failed"]:
        out["ts"] = old["ts"]
    elif new["failed"]:
        out["ts"] = new["ts"]
    out["failed"] = max(old["failed"], new["failed"])
    return out


def upsert_txns(conn: sqlite3.Connection, events: Iterable[StoredEvent]) -> set[TxnKey]:
    """Apply ``txn`` events to ``txns``; returns the failed payments they touched."""
    touched: set[TxnKey] = set()
    names = [c.strip() for c in _OLD_COLUMNS.split(",")]
    for ev in events:
        if ev.kind != "txn" or not isinstance(ev.body.get("txn_id"), str):
            continue
        key = (ev.terminal_id, str(ev.body["txn_id"]))
        new = _event_values(ev)
        row = conn.execute(
            f"SELECT {_OLD_COLUMNS} FROM txns WHERE terminal_id = ? AND txn_id = ?", key
        ).fetchone()
        values = new if row is None else _merge(dict(zip(names, row, strict=True)), new)
        conn.execute(_UPSERT, (*key, *(values[n] for n in names)))
        if values["failed"]:
            touched.add(key)
    return touched


# --- what needs a new look ---------------------------------------------------------------


def horizon_floor(now: datetime, settings: AttributionSettings) -> str:
    """Failed payments older than this (event time) are no longer revised."""
    return ts_text(now - timedelta(seconds=settings.revise_horizon_s))


def dirty_by_evidence(
    conn: sqlite3.Connection,
    events: Iterable[StoredEvent],
    settings: AttributionSettings,
    now: datetime,
) -> set[TxnKey]:
    """Failed payments of the stores whose new evidence falls in the time read around them.

    The rules read [begin - before_s, ts + after_s] around a payment, also from
    the other terminals of its store; so an evidence event at time e concerns
    the store's failed payments with ts >= e - after_s and begin <= e + before_s.
    """
    spans: dict[str, tuple[str, str]] = {}
    restarts: list[StoredEvent] = []
    for ev in events:
        if ev.kind not in EVIDENCE_KINDS:
            continue
        low, high = spans.get(ev.store_id, (ev.ts, ev.ts))
        if ev.kind == "device_status":  # device states are read further back
            reach = parse_ts(ev.ts) + timedelta(seconds=evidence.DEVICE_LOOKBACK_S)
            high = max(high, ts_text(reach))
        spans[ev.store_id] = (min(low, ev.ts), max(high, ev.ts))
        if _restart_sign(ev):
            restarts.append(ev)
    if not spans or settings.revise_horizon_s <= 0:
        return set()
    floor = horizon_floor(now, settings)
    out: set[TxnKey] = set()
    for store_id, (low, high) in spans.items():
        first = ts_text(parse_ts(low) - timedelta(seconds=settings.after_s))
        last = ts_text(parse_ts(high) + timedelta(seconds=settings.before_s))
        rows = conn.execute(
            "SELECT terminal_id, txn_id FROM txns WHERE store_id = ? AND failed = 1"
            " AND ts >= ? AND ts >= ? AND min(coalesce(started_at, ts), ts) <= ?",
            (store_id, max(first, floor), floor, last),
        ).fetchall()
        out.update((t, x) for t, x in rows)
    # A payment left open by a power cut is recorded right after the agent's restart,
    # and the rules find the restart and the reboot's host sample by seq, not by time
    # (the payment is dated at its deadline, long before): a start or host sample
    # that arrives in a later pass must revisit the payments recorded around it.
    for ev in restarts:
        if ev.kind == "agent_event":  # payments recorded just after the start
            first_seq, last_seq = ev.seq, ev.seq + evidence.RESTART_SEQ_WINDOW
        else:  # the reboot's host sample: payments recorded between the start and it
            first_seq = ev.seq - evidence.HOST_AFTER_START_SEQS - evidence.RESTART_SEQ_WINDOW
            last_seq = ev.seq
        rows = conn.execute(
            "SELECT terminal_id, txn_id FROM txns WHERE terminal_id = ? AND agent_id = ?"
            " AND failed = 1 AND seq BETWEEN ? AND ? AND ts >= ?",
            (ev.terminal_id, ev.agent_id, first_seq, last_seq, floor),
        ).fetchall()
        out.update((t, x) for t, x in rows)
    return out


#: a host sample this soon after boot may be the evidence of a reboot
_FRESH_BOOT_S: Final = 3600.0


def _restart_sign(ev: StoredEvent) -> bool:
    """An agent start, or a host sample taken soon after the host booted."""
    if ev.kind == "agent_event":
        return ev.body.get("event") == "start"
    if ev.kind == "host_sample":
        uptime = ev.body.get("uptime_s")
        return isinstance(uptime, int | float) and uptime <= _FRESH_BOOT_S
    return False


def fleet_neighbours(
    conn: sqlite3.Connection,
    changed: Iterable[tuple[str, str]],
    settings: AttributionSettings,
    now: datetime,
) -> set[TxnKey]:
    """Failed payments to the same acquirer within ±fleet_window_s of ``changed`` (acquirer, ts)."""
    floor = horizon_floor(now, settings)
    window = timedelta(seconds=settings.fleet_window_s)
    by_acquirer: dict[str, list[datetime]] = {}
    for acquirer, ts in changed:
        by_acquirer.setdefault(acquirer, []).append(parse_ts(ts))
    out: set[TxnKey] = set()
    for acquirer, times in by_acquirer.items():
        times.sort()
        spans: list[list[datetime]] = []
        for t in times:  # merge overlapping windows: one query each
            if spans and t - window <= spans[-1][1]:
                spans[-1][1] = t + window
            else:
                spans.append([t - window, t + window])
        for low, high in spans:
            rows = conn.execute(
                "SELECT terminal_id, txn_id FROM txns WHERE acquirer = ? AND failed = 1"
                " AND ts >= ? AND ts <= ? AND ts >= ?",
                (acquirer, ts_text(low), ts_text(high), floor),
            ).fetchall()
            out.update((t, x) for t, x in rows)
    return out


# --- attribution -------------------------------------------------------------------------


def load_txn(conn: sqlite3.Connection, key: TxnKey) -> TxnRow | None:
    row = conn.execute(
        f"SELECT {_TXN_ROW_COLUMNS} FROM txns WHERE terminal_id = ? AND txn_id = ?", key
    ).fetchone()
    if row is None:
        return None
    (terminal_id, store_id, txn_id, agent_id, seq, ts, started, acquirer, outcome, code, tech,
     in_doubt) = row  # fmt: skip
    return TxnRow(
        terminal_id=terminal_id,
        store_id=store_id,
        txn_id=txn_id,
        agent_id=agent_id,
        seq=int(seq),
        ts=parse_ts(ts),
        started_at=parse_ts(started) if started else None,
        acquirer=acquirer,
        outcome=outcome,
        response_code=code,
        technical=bool(tech),
        in_doubt=bool(in_doubt),
    )


def evidence_json(verdict: Verdict) -> str:
    return json.dumps(
        [
            {
                "event_id": e.event_id,
                "kind": e.kind,
                "ts": ts_text(e.ts),
                "terminal_id": e.terminal_id,
                "what": e.what,
            }
            for e in verdict.evidence
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


@dataclass(slots=True)
class Attribution:
    """What one round of attribution did."""

    attributed: int = 0  # verdicts written
    first: int = 0  # payments that had no cause before
    revised: int = 0  # payments whose cause changed
    #: the payments attributed (their incident membership may have to follow)
    changed: set[TxnKey] = field(default_factory=set)


def attribute(
    conn: sqlite3.Connection,
    dirty: set[TxnKey],
    settings: AttributionSettings,
    now: datetime,
    local_verdict: LocalFn,
    final_verdict: FinalFn,
) -> Attribution:
    """Local verdicts for ``dirty`` (and their fleet neighbours when a local cause changed),
    then final verdicts for all of them; writes them to ``txns``."""
    result = Attribution()
    locals_: dict[TxnKey, tuple[TxnRow, Verdict]] = {}
    moved: list[tuple[str, str]] = []

    def local(keys: Iterable[TxnKey], track: bool) -> None:
        for key in sorted(keys):
            txn = load_txn(conn, key)
            if txn is None:
                continue
            old = conn.execute(
                "SELECT local_cause FROM txns WHERE terminal_id = ? AND txn_id = ?", key
            ).fetchone()
            verdict = local_verdict(conn, txn, settings)
            locals_[key] = (txn, verdict)
            cause = str(verdict.cause)
            previous = old[0] if old is not None else None
            if previous != cause:
                conn.execute(
                    "UPDATE txns SET local_cause = ? WHERE terminal_id = ? AND txn_id = ?",
                    (cause, *key),
                )
                # the fleet rule counts stores whose local cause leaves the acquirer as the
                # suspect: only a change in or out of that set matters to the neighbours
                counted = (previous in FLEET_CAUSES) != (cause in FLEET_CAUSES)
                if track and counted and txn.acquirer is not None:
                    moved.append((txn.acquirer, ts_text(txn.ts)))

    local(dirty, track=True)
    if moved:
        local(fleet_neighbours(conn, moved, settings, now) - set(locals_), track=False)
    stamp = ts_text(now)
    for key, (txn, local_v) in sorted(locals_.items()):
        final = final_verdict(conn, txn, local_v, settings)
        old = conn.execute(
            "SELECT cause FROM txns WHERE terminal_id = ? AND txn_id = ?", key
        ).fetchone()
        previous = old[0] if old is not None else None
        conn.execute(
            "UPDATE txns SET cause = ?, confidence = ?, evidence = ?, action = ?,"
            " attributed_at = ? WHERE terminal_id = ? AND txn_id = ?",
            (
                str(final.cause),
                max(0.0, min(1.0, float(final.confidence))),
                evidence_json(final),
                final.action,
                stamp,
                *key,
            ),
        )
        result.attributed += 1
        if previous is None:
            result.first += 1
        elif previous != str(final.cause):
            result.revised += 1
        result.changed.add(key)
    return result
