"""What each ``posmon`` command prints on a terminal, from the API's JSON.

Each function takes the API's answer (dicts as the contract describes them)
and returns text. A missing field shows as "-", never as an error: a newer
or older collector may add or lack a field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from collector.correlate.model import IN_DOUBT_ACTION

from .tables import Column, age, amount, millis, percent, table, text, when, when_ago

Item = Mapping[str, Any]


def _get(item: Item, key: str) -> Any:
    return item.get(key) if isinstance(item, Mapping) else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def unresolved_in_doubt(item: Item) -> bool:
    return _get(item, "in_doubt") is True and not _get(item, "resolution")


def outcome(item: Item) -> str:
    """``timeout IN DOUBT`` for a payment that may have charged the customer."""
    words = [text(_get(item, "outcome"))]
    if unresolved_in_doubt(item):
        words.append("IN DOUBT")
    elif _get(item, "resolution"):
        words.append(f"({_get(item, 'resolution')})")
    if _get(item, "late") is True:
        words.append("late")
    return " ".join(words)


def confidence(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{round(value * 100)} %"
    return "-"


def cause(item: Item) -> str:
    """The payment's cause; ``pending`` for a failed one the correlator has not named yet."""
    if _get(item, "cause"):
        return text(_get(item, "cause"))
    return "pending" if _get(item, "failed") is True else "-"


def why(item: Item) -> str:
    """The first piece of evidence, in plain words."""
    evidence = _get(item, "evidence")
    if isinstance(evidence, list) and evidence and isinstance(evidence[0], Mapping):
        return text(evidence[0].get("what"))
    return "-"


def in_doubt_note(items: Sequence[Item]) -> str:
    """The warning under a list that holds unresolved in-doubt payments ("" if none)."""
    n = sum(1 for item in items if unresolved_in_doubt(item))
    if not n:
        return ""
    return f"\n\n{_plural(n, 'payment')} IN DOUBT above. {IN_DOUBT_ACTION}"


# --- fleet ---------------------------------------------------------------------------------


def _correlator(status: Any) -> str:
    if not isinstance(status, Mapping) or status.get("available") is False:
        return "not running in this collector"
    words = ["idle" if status.get("idle") is True else "working"]
    pending = status.get("pending_events")
    if isinstance(pending, int):
        words.append(f"{_plural(pending, 'event')} not yet read")
    if status.get("last_error"):
        words.append(f"last error: {status['last_error']}")
    return ", ".join(words)


def render_fleet(fleet: Item) -> str:
    terminals = _get(fleet, "terminals") or {}
    failed = _get(fleet, "failed_payments") or {}
    by_cause = failed.get("by_cause") or {}
    counts = [(str(cause), _count(n)) for cause, n in by_cause.items() if _count(n)]
    unattributed = failed.get("unattributed")
    if not isinstance(unattributed, int):  # older answer: what the causes do not account for
        unattributed = _count(failed.get("total")) - sum(n for _, n in counts)
    counts.sort(key=lambda kv: (-kv[1], kv[0]))
    if unattributed > 0:
        counts.append(("not yet attributed", unattributed))
    causes = ", ".join(f"{cause} {n}" for cause, n in counts)
    in_doubt = _count(_get(fleet, "in_doubt"))
    states = ", ".join(
        f"{text(terminals.get(k))} {k}" for k in ("ok", "warning", "fault", "offline")
    )
    lines = [
        f"Fleet at {when(_get(fleet, 'generated_at'))}",
        f"  terminals        {text(terminals.get('total'))}: {states}",
        f"  failed payments  {text(failed.get('total'))} since {when(failed.get('since'))}"
        + (f": {causes}" if causes else ""),
        f"  in doubt         {in_doubt} unresolved" + (f" — {IN_DOUBT_ACTION}" if in_doubt else ""),
        f"  open incidents   {text(_get(fleet, 'open_incidents'))}",
        f"  correlator       {_correlator(_get(fleet, 'correlator'))}",
    ]
    stores = _get(fleet, "stores") or []
    columns = [
        Column("STORE"),
        Column("TERMINALS", right=True),
        Column("OK", right=True),
        Column("WARNING", right=True),
        Column("FAULT", right=True),
        Column("OFFLINE", right=True),
        Column("FAILED 24H", right=True),
        Column("IN DOUBT", right=True),
        Column("INCIDENTS", right=True),
    ]
    keys = (
        "store_id",
        "terminals",
        "ok",
        "warning",
        "fault",
        "offline",
        "failed_24h",
        "in_doubt",
        "open_incidents",
    )
    rows = [[text(store.get(k)) for k in keys] for store in stores if isinstance(store, Mapping)]
    lines += ["", "Stores (worst first)", table(columns, rows, indent="  ")]
    return "\n".join(lines)


# --- terminals -----------------------------------------------------------------------------


def render_terminals(items: Sequence[Item], now: datetime) -> str:
    columns = [
        Column("TERMINAL"),
        Column("STORE"),
        Column("STATE"),
        Column("LAST SEEN", 34),
        Column("VERSION", 16),
        Column("FAILED 24H", right=True),
        Column("IN DOUBT", right=True),
    ]
    rows = [
        [
            text(item.get("terminal_id")),
            text(item.get("store_id")),
            text(item.get("state")).upper(),
            when_ago(item.get("last_seen"), now),
            text(item.get("agent_version")),
            text(item.get("failed_24h")),
            text(item.get("in_doubt")),
        ]
        for item in items
    ]
    return table(columns, rows)


def _host(host: Any, sampled: Any, now: datetime) -> str:
    if not isinstance(host, Mapping):
        return "no host sample yet"
    parts = [
        f"cpu {percent(host.get('cpu_pct'))}",
        f"memory {percent(host.get('mem_pct'))}",
        f"disk {percent(host.get('disk_pct'))}",
    ]
    if isinstance(host.get("load1"), int | float):
        parts.append(f"load {host['load1']:g}")
    uptime = host.get("uptime_s")
    if isinstance(uptime, int | float):
        parts.append(f"up {age_of_seconds(uptime)}")
    sampled = sampled or host.get("ts")
    return ", ".join(parts) + (f" (sampled {age(sampled, now)})" if sampled else "")


def age_of_seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _backlog(value: Any) -> str:
    if not isinstance(value, int) or isinstance(value, bool):
        return "unknown"
    return f"{_plural(value, 'event')} waiting to upload"


def _offset(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "unknown"
    return f"{value:+g} ms"


def _probe_rows(probes: Sequence[Item], now: datetime) -> list[list[str]]:
    return [
        [
            text(p.get("probe")),
            text(p.get("target")),
            text(p.get("role")),
            text(p.get("acquirer")),
            text(p.get("state")).upper(),
            when_ago(p.get("since"), now),
            percent(p.get("loss_pct")),
            millis(p.get("rtt_avg_ms")),
            text(p.get("error")),
        ]
        for p in probes
        if isinstance(p, Mapping)
    ]


def _device_rows(devices: Sequence[Item], now: datetime) -> list[list[str]]:
    return [
        [
            text(d.get("device")),
            text(d.get("device_kind")),
            text(d.get("state")).upper(),
            ", ".join(map(str, d.get("flags") or [])) or "-",
            when_ago(d.get("since"), now),
            text(d.get("reason")),
        ]
        for d in devices
        if isinstance(d, Mapping)
    ]


def render_terminal(t: Item, now: datetime) -> str:
    in_doubt = _count(_get(t, "in_doubt"))
    backlog = _get(t, "spool_backlog")
    lines = [
        f"Terminal {text(_get(t, 'terminal_id'))} in store {text(_get(t, 'store_id'))}: "
        f"{text(_get(t, 'state')).upper()}",
        f"  last seen      {when_ago(_get(t, 'last_seen'), now)}",
        f"  first seen     {when(_get(t, 'first_seen'))}",
        f"  agent          {text(_get(t, 'agent_id'))} version {text(_get(t, 'agent_version'))}",
        f"  spool backlog  {_backlog(backlog)}",
        f"  clock offset   {_offset(_get(t, 'clock_offset_ms'))}",
        f"  host           {_host(_get(t, 'host'), _get(t, 'host_ts'), now)}",
        f"  in doubt       {_plural(in_doubt, 'payment')}"
        + (f" — {IN_DOUBT_ACTION}" if in_doubt else ""),
        "",
        "Probes",
        table(
            [
                Column("PROBE", 12),
                Column("TARGET"),
                Column("ROLE"),
                Column("ACQUIRER", 20),
                Column("STATE"),
                Column("SINCE", 34),
                Column("LOSS", right=True),
                Column("RTT", right=True),
                Column("ERROR", 30),
            ],
            _probe_rows(_get(t, "probes") or [], now),
            indent="  ",
        ),
        "",
        "Devices",
        table(
            [
                Column("DEVICE"),
                Column("KIND", 16),
                Column("STATE"),
                Column("FLAGS"),
                Column("SINCE", 34),
                Column("REASON", 50),
            ],
            _device_rows(_get(t, "devices") or [], now),
            indent="  ",
        ),
    ]
    failures = [f for f in _get(t, "recent_failures") or [] if isinstance(f, Mapping)]
    lines += ["", "Recent failures (newest first)", _failure_table(failures, now)]
    if note := in_doubt_note(failures):
        lines += ["", note.strip("\n")]
    incidents = [i for i in _get(t, "open_incidents") or [] if isinstance(i, Mapping)]
    lines += ["", "Open incidents", incident_table(incidents, indent="  ")]
    return "\n".join(lines)


def _failure_table(items: Sequence[Item], now: datetime) -> str:
    columns = [
        Column("TIME", 34),
        Column("TXN", 24),
        Column("ACQUIRER", 16),
        Column("OUTCOME", 24),
        Column("CAUSE", 16),
        Column("CONF", right=True),
        Column("WHY", 50),
        Column("ACTION", 70),
    ]
    rows = [
        [
            when_ago(f.get("ts"), now),
            text(f.get("txn_id")),
            text(f.get("acquirer")),
            outcome(f),
            cause(f),
            confidence(f.get("confidence")),
            why(f),
            text(f.get("action")),
        ]
        for f in items
    ]
    return table(columns, rows, indent="  ")


# --- transactions, incidents, timeline -----------------------------------------------------


def render_txns(items: Sequence[Item]) -> str:
    columns = [
        Column("TIME", 20),
        Column("TERMINAL", 20),
        Column("STORE", 16),
        Column("TXN", 24),
        Column("ACQUIRER", 16),
        Column("OUTCOME", 24),
        Column("CODE"),
        Column("AMOUNT", right=True),
        Column("CAUSE", 16),
        Column("CONF", right=True),
        Column("WHY", 40),
        Column("ACTION", 60),
    ]
    rows = [
        [
            when(t.get("ts")),
            text(t.get("terminal_id")),
            text(t.get("store_id")),
            text(t.get("txn_id")),
            text(t.get("acquirer")),
            outcome(t),
            text(t.get("response_code")),
            amount(t.get("amount_minor"), t.get("currency")),
            cause(t),
            confidence(t.get("confidence")),
            why(t),
            text(t.get("action")),
        ]
        for t in items
    ]
    return table(columns, rows) + in_doubt_note(items)


def where(incident: Item) -> str:
    """The incident's scope in words: ``store S-1``, ``acquirer ACQ``, ``T-1 printer``."""
    scope = _get(incident, "scope")
    if scope == "store":
        return f"store {text(_get(incident, 'store_id'))}"
    if scope == "acquirer":
        return f"acquirer {text(_get(incident, 'acquirer'))}"
    if scope == "device":
        return f"{text(_get(incident, 'terminal_id'))} {text(_get(incident, 'device'))}"
    if scope == "terminal":
        return f"terminal {text(_get(incident, 'terminal_id'))}"
    return text(scope)


def incident_table(items: Sequence[Item], *, indent: str = "") -> str:
    columns = [
        Column("ID", right=True),
        Column("STATE"),
        Column("STARTED", 20),
        Column("ENDED", 20),
        Column("KIND"),
        Column("CAUSE", 16),
        Column("WHERE", 30),
        Column("TERMINALS", right=True),
        Column("FAILED", right=True),
        Column("IN DOUBT", right=True),
        Column("TITLE", 60),
    ]
    rows = [
        [
            text(i.get("id")),
            text(i.get("state")).upper(),
            when(i.get("started_at")),
            when(i.get("ended_at")),
            text(i.get("kind")),
            text(i.get("cause")),
            where(i),
            str(len(i.get("terminals") or [])),
            text(i.get("failed_count")),
            text(i.get("in_doubt_count")),
            text(i.get("title")),
        ]
        for i in items
    ]
    return table(columns, rows, indent=indent)


def render_incident(i: Item) -> str:
    in_doubt = _count(_get(i, "in_doubt_count"))
    terminals = _get(i, "terminals") or []
    lines = [
        f"Incident {text(_get(i, 'id'))}: {text(_get(i, 'title'))}",
        f"  state          {text(_get(i, 'state')).upper()}",
        f"  kind, cause    {text(_get(i, 'kind'))}, {text(_get(i, 'cause'))}",
        f"  where          {where(i)}",
        f"  started        {when(_get(i, 'started_at'))}",
        f"  ended          {when(_get(i, 'ended_at'))}",
        f"  last sign      {when(_get(i, 'last_seen_at'))}",
        f"  terminals      {', '.join(map(str, terminals)) or '-'}",
        f"  failed         {_plural(_count(_get(i, 'failed_count')), 'payment')}",
        f"  in doubt       {_plural(in_doubt, 'payment')}"
        + (f" — {IN_DOUBT_ACTION}" if in_doubt else ""),
        f"  action         {text(_get(i, 'action'))}",
    ]
    return "\n".join(lines)


def render_timeline(items: Sequence[Item]) -> str:
    columns = [Column("TIME", 20), Column("KIND", 14), Column("EVENT", 40), Column("SUMMARY", 100)]
    rows = [
        [when(e.get("ts")), text(e.get("kind")), text(e.get("event_id")), text(e.get("summary"))]
        for e in items
    ]
    return table(columns, rows)
