"""Payments in the ``txns`` table: the upsert from ``txn`` events, which ones need a (new) cause,
and writing the verdicts.

One row per (terminal, ``txn_id``). A payment can have several ``txn`` events
(a timeout, then the late end, then the POS's resolution). The newest event
(by ``seq`` of the same agent) tells the outcome, ``in_doubt``, ``late`` and
``resolution``; but ``failed`` never goes back to 0: a timeout later settled
as approved still failed at the till (it is no longer in doubt), and its time
(``ts``) stays the moment it failed. Failed = outcome ``timeout`` or
``error``, or a decline with a technical response code.

Which failed payments need a (new) cause is kept in ``txn_pending`` (level 2:
its first cause, the payment is new or changed; 1: a revision), so the work
survives from one correlator pass to the next and a payment marked many times
is decided once. Revisions are what made passes huge under load (an event
marked every failed payment of its store within minutes, and each fleet
change re-read every failure to the acquirer); so a payment is marked only
by what can change its verdict:

*Evidence* (``state.Signal``; the rules are in :mod:`.rules`). The rules
take the first broken hop in the order ``power > device > host > link >
gateway > isp > dns > clock > acquirer_path > acquirer_outage > unknown``
(:data:`ORDER`), so evidence of one hop can change only payments whose
local cause is that hop or one after it; a payment already blamed on an
earlier hop keeps its cause whatever this evidence says. Each signal is
placed at the first hop it can speak for (:func:`_impact`):

- a failing probe window or a change to fail (``failing``): the hop of its
  role (link; gateway; isp, and collector for a store without an ISP
  anchor; dns, and any other role, whose name errors blame the DNS and whose
  clock errors the clock). A payment whose local cause is that very hop at the
  rules' full confidence (:data:`FULL_CONFIDENCE`: direct evidence of its own
  terminal) cannot be moved by more of the same evidence and is left alone;
- a probe change to ok (``change``): the same hops, none left alone — a span
  ended and the payments it covered may lose their cause;
- a healthy window of an internet anchor (isp, collector; ``anchor``): the
  acquirer_path and acquirer_outage verdicts made without an anchor (their
  confidence rises with one), and for an isp window the isp verdicts (one
  anchor down while another answers over the payment is not the ISP); a
  healthy window can neither make an ISP verdict nor move one at full
  confidence. Healthy windows of other roles, and every window's order, say
  nothing: a window is a span of its own and cuts nothing short;
- a device status whose rule-relevant state changed (a UPS flag of a mains
  failure, a PIN pad in fault, a modem without network), a late one (it may
  cut a span short), or one heard again after a long silence: from the
  first hop among its old and new states (power for a late one). A heartbeat
  repeating the state in order is no signal: the span of the previous status
  already reaches to the end of what the rules read;
- a starved host sample: host, left alone at full confidence; a host sample
  of a new boot (or a late fresh one) and an agent start (``restart``): every
  hop, and also the payments recorded just after the restart, which the rules
  link to it by seq, not by time. Other host samples and agent events are
  never read by the rules.

A signal at time e concerns the payments the rules read it for:
``ts >= e - after_s`` and ``begin <= e + before_s`` (device states up to
``DEVICE_LOOKBACK_S`` earlier; a window or a host sample, a span of its own
that the rules credit only within ``SLACK_S`` of a payment, only the payments
that near), of the whole store for the store-level
probe roles (gateway, isp, dns: a terminal borrows its neighbours'), else of
its terminal only; never older than ``revise_horizon_s``. This holds as well
for evidence that arrives late and out of order (an offline store uploading
its backlog): ranges are by event time, and a late status is a signal.

*The fleet* (:func:`mark_fleet_changes`): for a payment the fleet rule
reads, of each other store, its failure to the same acquirer *nearest* to it
within ``±fleet_window_s`` among those whose local cause leaves the acquirer
as the suspect (:data:`FLEET_CAUSES`), and whether that one saw the acquirer
fail (:func:`fleet_class`). Only the payments of other stores (with such a
local cause themselves) for which a changed failure is or was that nearest
one are revised: when a failure joins, leaves or changes class (or a counted
payment moves in time), those within the window nearer to it than to its
store's previous and next counted failures. A store's first failure in a
while concerns the whole window; one of many, a sliver of it.

What is not revised is evidence that repeats what a verdict already holds: a
verdict may then cite one equivalent event rather than another (a heartbeat
instead of the status it repeats), never a different cause or confidence.
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
from .rules import ACQUIRER_SIDE, CHECKS, SLACK_S
from .state import Signal, StoredEvent

#: (terminal_id, txn_id)
TxnKey = tuple[str, str]
LocalFn = Callable[[sqlite3.Connection, TxnRow, AttributionSettings], Verdict]
FinalFn = Callable[[sqlite3.Connection, TxnRow, Verdict, AttributionSettings], Verdict]

FAILED_OUTCOMES: Final = frozenset({"timeout", "error"})
#: Local causes the fleet rule may still turn into ``acquirer_outage`` (also spelled out in
#: the schema's ``txns_fleet`` index and ``fleet_minutes`` triggers).
FLEET_CAUSES: Final = evidence.FLEET_CAUSES
_FLEET_IN: Final = "local_cause IN ('acquirer_path', 'acquirer_outage', 'unknown')"
#: The causes in the rules' order of precedence: the first broken hop wins.
ORDER: Final = (*(str(cause) for cause, _ in CHECKS), "unknown")
#: The highest confidence the rules give each cause (rules' docstring: direct evidence of
#: the payment's own terminal): more evidence of the same hop cannot raise it.
FULL_CONFIDENCE: Final[dict[str, float]] = {
    "power": 0.9, "device": 0.9, "host": 0.8, "link": 0.9, "gateway": 0.9, "isp": 0.9,
    "dns": 0.9, "clock": 0.8, "acquirer_path": 0.8, "acquirer_outage": 0.5,
}  # fmt: skip
_EPS: Final = 1e-9
#: Below these an acquirer verdict was made without a healthy internet anchor.
ANCHORED_CONFIDENCE: Final[dict[str, float]] = {"acquirer_path": 0.8, "acquirer_outage": 0.5}
#: The first hop a probe role's failure can speak for (others: dns, for their name errors).
ROLE_HOP: Final[dict[str, str]] = {
    "link": "link", "gateway": "gateway", "isp": "isp", "collector": "isp", "dns": "dns",
}  # fmt: skip

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


#: A counted failure of the fleet rule (acquirer, store, ts) that joined or left, and its key.
FleetChange = tuple[str, str, str, TxnKey]


@dataclass(slots=True)
class Upserted:
    """What applying ``txn`` events did."""

    #: failed payments they touched (marked pending 2)
    touched: set[TxnKey] = field(default_factory=set)
    #: counted failures that moved (in time, acquirer or store): both places changed
    fleet: list[FleetChange] = field(default_factory=list)


def upsert_txns(conn: sqlite3.Connection, events: Iterable[StoredEvent]) -> Upserted:
    """Apply ``txn`` events to ``txns``; the failed payments they touched become pending."""
    out = Upserted()
    names = [c.strip() for c in _OLD_COLUMNS.split(",")]
    for ev in events:
        if ev.kind != "txn" or not isinstance(ev.body.get("txn_id"), str):
            continue
        key = (ev.terminal_id, str(ev.body["txn_id"]))
        new = _event_values(ev)
        row = conn.execute(
            f"SELECT {_OLD_COLUMNS}, local_cause FROM txns WHERE terminal_id = ? AND txn_id = ?",
            key,
        ).fetchone()
        if row is None:
            values = new
        else:
            old = dict(zip(names, row[:-1], strict=True))
            values = _merge(old, new)
            where = (old["acquirer"], old["store_id"], old["ts"])
            if (
                old["failed"]
                and row[-1] in FLEET_CAUSES
                and old["acquirer"] is not None
                and where != (values["acquirer"], values["store_id"], values["ts"])
            ):
                out.fleet.append((*where, key))
                if values["acquirer"] is not None:
                    out.fleet.append((values["acquirer"], values["store_id"], values["ts"], key))
        conn.execute(_UPSERT, (*key, *(values[n] for n in names)))
        if values["failed"]:
            conn.execute(
                "INSERT INTO txn_pending (terminal_id, txn_id, level, ts) VALUES (?, ?, 2, ?)"
                " ON CONFLICT (terminal_id, txn_id) DO UPDATE SET level = 2, ts = excluded.ts",
                (*key, values["ts"]),
            )
            out.touched.add(key)
    return out


# --- what needs a new look ---------------------------------------------------------------


def horizon_floor(now: datetime, settings: AttributionSettings) -> str:
    """Failed payments older than this (event time) are no longer revised."""
    return ts_text(now - timedelta(seconds=settings.revise_horizon_s))


@dataclass(frozen=True, slots=True)
class _Impact:
    """Which payments around a signal at time e it may change."""

    #: the payments' local causes it may change (SQL condition on txns) and its parameters
    which: str
    params: tuple[Any, ...]
    store: bool  # the store's payments (a store-level probe role), else its terminal's
    #: payments with ts >= e - behind and begin <= e + ahead (None: the rules' read range)
    behind_s: float | None = None
    ahead_s: float | None = None
    reach_s: float = 0.0  # ... and device states are read this much further back


def _from(first: str, full: str | None) -> tuple[str, tuple[Any, ...]]:
    """Local causes at or after the hop ``first``; without those at full confidence for the
    hop ``full`` (never the fleet rule's causes: there cause = local_cause)."""
    causes = ORDER[ORDER.index(first) :]
    which = f"local_cause IN ({', '.join('?' * len(causes))})"
    if full is None:
        return which, tuple(causes)
    which += " AND NOT (local_cause = ? AND cause = ? AND confidence >= ?)"
    return which, (*causes, full, full, FULL_CONFIDENCE[full] - _EPS)


def _unanchored(isp: bool) -> tuple[str, tuple[Any, ...]]:
    """Acquirer verdicts made without a healthy internet anchor (a verdict the fleet rule
    changed does not tell its local confidence: taken); with ``isp``, ISP verdicts too: a
    healthy window of another ISP anchor over the payment says the internet worked."""
    alternatives = ["(local_cause = ? AND NOT (cause = local_cause AND confidence >= ?))"]
    alternatives *= len(ANCHORED_CONFIDENCE)
    params: list[Any] = [
        v for cause, level in ANCHORED_CONFIDENCE.items() for v in (cause, level - _EPS)
    ]
    if isp:
        alternatives.append("local_cause = 'isp'")
    return "(" + " OR ".join(alternatives) + ")", tuple(params)


def _impact(signal: Signal) -> _Impact:
    """Where a signal stands in the rules' order, and how far from it it counts."""
    ev, reason = signal.event, signal.reason
    if ev.kind in ("probe_window", "probe_change"):
        role = str(ev.body.get("role", ""))
        store = role in evidence.STORE_ROLES
        behind = ahead = None
        if ev.kind == "probe_window":  # a span of its own: it counts within SLACK_S
            window_s = ev.body.get("window_s")
            width = float(window_s) if isinstance(window_s, int | float) else 0.0
            behind, ahead = width + SLACK_S, SLACK_S
        if reason == "anchor":
            which, params = _unanchored(isp=role == "isp")
            return _Impact(which, params, store, behind, ahead)
        hop = ROLE_HOP.get(role, "dns")
        full = hop if reason == "failing" and role != "collector" else None
        return _Impact(*_from(hop, full), store, behind, ahead)
    if ev.kind == "device_status":
        causes = signal.causes if reason != "late" else frozenset({"power"})
        first = min(causes or {"power"}, key=ORDER.index)
        return _Impact(*_from(first, None), False, reach_s=float(evidence.DEVICE_LOOKBACK_S))
    if ev.kind == "host_sample" and reason in ("failing", "late"):
        return _Impact(*_from("host", "host"), False, evidence.HOST_WINDOW_S + SLACK_S, SLACK_S)
    return _Impact(*_from("power", None), False)  # a restart: every hop


def _merged(spans: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for low, high in sorted(spans):
        if out and low <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


def mark_by_evidence(
    conn: sqlite3.Connection,
    signals: Iterable[Signal],
    settings: AttributionSettings,
    now: datetime,
) -> int:
    """Mark pending (1) the failed payments the signals may change; returns how many.

    The rules read ``[begin - before_s, ts + after_s]`` around a payment, so a
    signal at time e concerns the payments with ``ts >= e - after_s`` and
    ``begin <= e + before_s``; a window or host sample (a span of its own) only
    those within ``SLACK_S`` of it (see the module's docstring for which ones).
    """
    if settings.revise_horizon_s <= 0:
        return 0
    floor = horizon_floor(now, settings)
    groups: dict[tuple[str, str, str, tuple[Any, ...]], list[tuple[str, str]]] = {}
    restarts: list[StoredEvent] = []
    for signal in signals:
        ev = signal.event
        t = parse_ts(ev.ts)
        impact = _impact(signal)
        behind = settings.after_s if impact.behind_s is None else impact.behind_s
        ahead = settings.before_s if impact.ahead_s is None else impact.ahead_s
        span = (
            ts_text(t - timedelta(seconds=behind)),
            ts_text(t + timedelta(seconds=ahead + impact.reach_s)),
        )
        column, value = (
            ("store_id", ev.store_id) if impact.store else ("terminal_id", ev.terminal_id)
        )
        groups.setdefault((column, value, impact.which, impact.params), []).append(span)
        if signal.reason == "restart":
            restarts.append(ev)
    marked = 0
    for (column, value, which, params), spans in sorted(groups.items(), key=str):
        for low, high in _merged(spans):
            marked += conn.execute(
                "INSERT INTO txn_pending (terminal_id, txn_id, level, ts)"
                f" SELECT terminal_id, txn_id, 1, ts FROM txns WHERE {column} = ? AND failed = 1"
                " AND ts >= ? AND min(coalesce(started_at, ts), ts) <= ?"
                f" AND {which} ON CONFLICT (terminal_id, txn_id) DO NOTHING",
                (value, max(low, floor), high, *params),
            ).rowcount
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
        marked += conn.execute(
            "INSERT INTO txn_pending (terminal_id, txn_id, level, ts)"
            " SELECT terminal_id, txn_id, 1, ts FROM txns WHERE terminal_id = ? AND agent_id = ?"
            " AND failed = 1 AND seq BETWEEN ? AND ? AND ts >= ?"
            " ON CONFLICT (terminal_id, txn_id) DO NOTHING",
            (ev.terminal_id, ev.agent_id, first_seq, last_seq, floor),
        ).rowcount
    return marked


_NEAREST = f"""
SELECT ts, terminal_id, txn_id FROM txns
WHERE acquirer = ? AND store_id = ? AND failed = 1 AND {_FLEET_IN} AND ts >= ? AND ts <= ?
ORDER BY ts {{order}} LIMIT 2
"""


def _other(rows: Iterable[tuple[str, str, str]], key: TxnKey) -> str | None:
    for ts, terminal_id, txn_id in rows:
        if (terminal_id, txn_id) != key:
            return ts
    return None


def fleet_class(local_cause: str | None) -> str | None:
    """What a failure is to the fleet rule: not counted (None), ``seen`` (the acquirer
    itself was seen failing) or ``unexplained`` (counted only beside ``seen`` ones)."""
    if local_cause not in FLEET_CAUSES:
        return None
    return "seen" if local_cause in ACQUIRER_SIDE else "unexplained"


def mark_fleet_changes(
    conn: sqlite3.Connection,
    changes: Iterable[FleetChange],
    settings: AttributionSettings,
    now: datetime,
) -> set[TxnKey]:
    """Mark pending (1) the counted failures of other stores that may read this one.

    For a payment P the fleet rule reads, of every other store, its counted
    failure to the same acquirer *nearest* to P within ``±fleet_window_s``
    (and whether it saw the acquirer fail). A counted failure of store S at t
    that joined, left or changed its class can only matter to the payments for
    which it is (or was) S's nearest: those within the window of t and nearer
    to t than to S's previous and next counted failures. When S fails often
    that is a sliver; when t is S's only failure around, the whole window.
    Returns the keys marked.
    """
    floor = horizon_floor(now, settings)
    window = timedelta(seconds=settings.fleet_window_s)
    marked: set[TxnKey] = set()
    for acquirer, store_id, ts, key in sorted(set(changes)):
        t = parse_ts(ts)
        before = conn.execute(
            _NEAREST.format(order="DESC"),
            (acquirer, store_id, ts_text(t - 2 * window), ts),
        ).fetchall()
        after = conn.execute(
            _NEAREST.format(order="ASC"), (acquirer, store_id, ts, ts_text(t + 2 * window))
        ).fetchall()
        low, high = t - window, t + window
        previous, following = _other(before, key), _other(after, key)
        if previous is not None:  # nearer to the previous one: it is S's nearest there
            low = max(low, t - (t - parse_ts(previous)) / 2)
        if following is not None:
            high = min(high, t + (parse_ts(following) - t) / 2)
        rows = conn.execute(
            "SELECT terminal_id, txn_id, ts FROM txns WHERE acquirer = ? AND failed = 1"
            f" AND ts >= ? AND ts <= ? AND ts >= ? AND store_id != ? AND {_FLEET_IN}",
            (acquirer, ts_text(low), ts_text(high), floor, store_id),
        ).fetchall()
        conn.executemany(
            "INSERT INTO txn_pending (terminal_id, txn_id, level, ts) VALUES (?, ?, 1, ?)"
            " ON CONFLICT (terminal_id, txn_id) DO NOTHING",
            rows,
        )
        marked.update((r[0], r[1]) for r in rows)
    return marked


def pending_keys(conn: sqlite3.Connection, limit: int) -> list[TxnKey]:
    """Up to ``limit`` pending payments: first causes (oldest first), then revisions."""
    out: list[TxnKey] = []
    for level in (2, 1):
        if len(out) >= limit:
            break
        rows = conn.execute(
            "SELECT terminal_id, txn_id FROM txn_pending WHERE level = ? ORDER BY ts LIMIT ?",
            (level, limit - len(out)),
        ).fetchall()
        out += [(r[0], r[1]) for r in rows]
    return out


def count_pending(conn: sqlite3.Connection) -> int:
    """Failed payments that still need a (new) cause."""
    return int(conn.execute("SELECT count(*) FROM txn_pending").fetchone()[0])


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

    def add(self, other: Attribution) -> None:
        self.attributed += other.attributed
        self.first += other.first
        self.revised += other.revised
        self.changed |= other.changed


def attribute(
    conn: sqlite3.Connection,
    keys: Iterable[TxnKey],
    settings: AttributionSettings,
    now: datetime,
    local_verdict: LocalFn,
    final_verdict: FinalFn,
    *,
    neighbours: bool = True,
) -> Attribution:
    """Decide ``keys``: local verdicts for all, then final verdicts (the fleet rule reads the
    others' local causes); writes them to ``txns`` and takes them off ``txn_pending``.

    A local cause moving in or out of the causes the fleet rule counts marks the
    payments of other stores whose count of stores changed (:func:`mark_fleet_changes`).
    With ``neighbours`` those are decided here too (one round: what they change in
    turn stays pending); without, they stay pending for the next pass.
    """
    result = Attribution()
    locals_: dict[TxnKey, tuple[TxnRow, Verdict]] = {}

    def local(todo: Iterable[TxnKey]) -> list[FleetChange]:
        changes: list[FleetChange] = []
        for key in sorted(todo):
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
            # the fleet rule reads the stores whose local cause leaves the acquirer as the
            # suspect, and which of them saw it fail: only a change of that matters
            if fleet_class(previous) != fleet_class(cause) and txn.acquirer:
                changes.append((txn.acquirer, txn.store_id, ts_text(txn.ts), key))
        return changes

    marked = mark_fleet_changes(conn, local(set(keys)), settings, now)
    if neighbours:
        mark_fleet_changes(conn, local(marked - set(locals_)), settings, now)
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
                _unit(final.confidence),
                evidence_json(final),
                final.action,
                stamp,
                *key,
            ),
        )
        conn.execute("DELETE FROM txn_pending WHERE terminal_id = ? AND txn_id = ?", key)
        result.attributed += 1
        if previous is None:
            result.first += 1
        elif previous != str(final.cause):
            result.revised += 1
        result.changed.add(key)
    return result


def _unit(value: float) -> float:
    return max(0.0, min(1.0, float(value)))
