"""The read API's handlers: fleet, terminals, timeline, transactions, incidents.

Every handler checks the token (viewer only), then its query parameters, then
runs its queries in one read snapshot on the API's own read-only connections
(:mod:`.reader`). Answers: 200 JSON; 400 ``{"error", "field"}`` for a bad
parameter; 401 no or unknown token; 403 an agent token; 404 unknown terminal
or incident; 503 the database failed.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
from aiohttp import web

from protocol import EVENT_KINDS, Cause, format_datetime

from ..app import HEALTH_KEY, SETTINGS_KEY, _authenticate, error_response
from ..correlate import service as correlate_service
from ..correlate.incidents import incident_json
from ..storage import StorageError
from . import queries, views
from .params import Key, Params, QueryError, encode_cursor
from .reader import SqliteReader

READER_KEY: Final = web.AppKey("api_reader", SqliteReader)

PREFIX: Final[str] = "/api/v1"
DAY: Final = timedelta(hours=24)
STATES: Final[tuple[str, ...]] = ("ok", "warning", "fault", "offline")
OUTCOMES: Final[tuple[str, ...]] = ("approved", "declined", "timeout", "error")
CAUSES: Final[tuple[str, ...]] = tuple(c.value for c in Cause)
INCIDENT_STATES: Final[tuple[str, ...]] = ("open", "closed", "all")
INCIDENT_KINDS: Final[tuple[str, ...]] = ("payments", "health")
EVENT_KIND_NAMES: Final[tuple[str, ...]] = tuple(EVENT_KINDS)
DEFAULT_STORES: Final = 100
MAX_ID: Final = 2**63 - 1
VIEWER_HINT: Final = (
    "this endpoint needs a viewer token; an agent token only uploads reports"
    " (create one with: posmon-collector token create --db PATH --viewer NAME)"
)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _bad(err: QueryError) -> web.Response:
    return _json({"error": err.message, "field": err.field}, status=400)


def _not_found(message: str) -> web.Response:
    return error_response(404, message)


Handler = Callable[[web.Request], Awaitable[web.Response]]


def viewer_only(handler: Handler) -> Handler:
    """Authenticate a viewer; map bad parameters to 400 and storage failures to 503."""

    async def wrapped(request: web.Request) -> web.Response:
        auth = await _authenticate(request)
        if isinstance(auth, web.Response):
            return auth
        if auth.kind != "viewer":
            return error_response(403, VIEWER_HINT)
        try:
            response = await handler(request)
        except QueryError as err:
            return _bad(err)
        except StorageError as err:
            request.app[HEALTH_KEY].failed(err)
            return error_response(503, "storage unavailable; retry later")
        request.app[HEALTH_KEY].succeeded()
        return response

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def _now() -> datetime:
    return datetime.now(UTC)


def _rule(request: web.Request, now: datetime) -> queries.StateRule:
    return queries.StateRule.of(request.app[SETTINGS_KEY].attribution, now)


def _reader(request: web.Request) -> SqliteReader:
    return request.app[READER_KEY]


def _page(
    rows: Sequence[Any], limit: int, tag: str, key: Callable[[Any], Key], item: Callable[[Any], Any]
) -> dict[str, Any]:
    more = len(rows) > limit
    shown = rows[:limit]
    cursor = encode_cursor(tag, key(shown[-1])) if more and shown else None
    return {"items": [item(r) for r in shown], "next_cursor": cursor}


# --- fleet ---------------------------------------------------------------------------------


async def _correlator_status(app: web.Application) -> dict[str, Any]:
    """The correlator's own account of itself, when it runs in this collector."""
    key = getattr(correlate_service, "CORRELATOR_KEY", None)
    if key is None or key not in app:
        return {"available": False}
    status: Any = app[key].status()
    if inspect.isawaitable(status):
        status = await status
    if dataclasses.is_dataclass(status) and not isinstance(status, type):
        status = dataclasses.asdict(status)
    if not isinstance(status, dict):
        return {"available": True}
    return {"available": True, **status}


@viewer_only
async def get_fleet(request: web.Request) -> web.Response:
    """``GET /api/v1/fleet``: the whole fleet at a glance, stores worst first."""
    params = Params(request.query, ("stores",))
    stores_limit = params.integer("stores", default=DEFAULT_STORES, low=1, high=10_000)
    now = _now()
    since = format_datetime(now - DAY)
    rule = _rule(request, now)
    rows = await _reader(request).read(lambda conn: queries.fleet(conn, rule, since))

    terminals = {"total": 0, **dict.fromkeys(STATES, 0)}
    stores: dict[str, dict[str, Any]] = {}
    store_of: dict[str, str] = {}
    for terminal_id, store_id, state in rows.terminals:
        store_of[terminal_id] = store_id
        terminals["total"] += 1
        terminals[state] += 1
        store = stores.setdefault(store_id, _empty_store(store_id))
        store["terminals"] += 1
        store[state] += 1
    failed_by_cause: dict[str | None, int] = {}
    for terminal_id, cause, n in rows.failed:
        failed_by_cause[cause] = failed_by_cause.get(cause, 0) + n
        if terminal_id in store_of:
            stores[store_of[terminal_id]]["failed_24h"] += n
    for terminal_id, n in rows.in_doubt:
        if terminal_id in store_of:
            stores[store_of[terminal_id]]["in_doubt"] += n
    for row in rows.open_incidents:
        touched = {row["store_id"]} if row["store_id"] else set()
        touched.update(store_of[t] for t in incident_json(row)["terminals"] if t in store_of)
        for store_id in touched:
            stores.setdefault(store_id, _empty_store(store_id))["open_incidents"] += 1

    by_cause = dict.fromkeys(CAUSES, 0)
    unattributed = 0
    for cause, n in failed_by_cause.items():
        if cause in by_cause:
            by_cause[cause] += n
        else:
            unattributed += n
    ranked = sorted(stores.values(), key=_worst_first)
    return _json(
        {
            "generated_at": format_datetime(now),
            "terminals": terminals,
            "failed_payments": {
                "since": since,
                "total": sum(failed_by_cause.values()),
                "by_cause": by_cause,
                "unattributed": unattributed,
            },
            "in_doubt": sum(n for _, n in rows.in_doubt),
            "open_incidents": len(rows.open_incidents),
            "correlator": await _correlator_status(request.app),
            "stores": ranked[:stores_limit],
            "stores_total": len(ranked),
        }
    )


def _empty_store(store_id: str) -> dict[str, Any]:
    return {
        "store_id": store_id,
        "terminals": 0,
        **dict.fromkeys(STATES, 0),
        "failed_24h": 0,
        "in_doubt": 0,
        "open_incidents": 0,
    }


def _worst_first(store: dict[str, Any]) -> tuple[Any, ...]:
    return (
        -(store["fault"] + store["offline"]),
        -store["open_incidents"],
        -store["in_doubt"],
        -store["failed_24h"],
        -store["warning"],
        store["store_id"],
    )


# --- terminals -----------------------------------------------------------------------------


@viewer_only
async def list_terminals(request: web.Request) -> web.Response:
    """``GET /api/v1/terminals``: terminals by id, with state and failed payments."""
    params = Params(request.query, ("store", "state", "limit", "cursor"))
    store = params.text("store")
    state = params.choice("state", STATES)
    limit = params.limit()
    after = params.cursor("terminals", (str,))
    now = _now()
    rule, since = _rule(request, now), format_datetime(now - DAY)
    rows = await _reader(request).read(
        lambda conn: queries.terminals_page(
            conn, rule, since=since, store=store, state=state, after=after, limit=limit
        )
    )
    return _json(
        _page(rows, limit, "terminals", lambda r: (r["terminal_id"],), views.terminal_item)
    )


@viewer_only
async def get_terminal(request: web.Request) -> web.Response:
    """``GET /api/v1/terminals/{terminal_id}``: one terminal's current state."""
    Params(request.query, ())
    terminal_id = request.match_info["terminal_id"]
    rule = _rule(request, _now())
    found = await _reader(request).read(lambda conn: queries.terminal(conn, rule, terminal_id))
    if found is None:
        return _not_found(f"no terminal {terminal_id!r} has reported to this collector")
    row = found.terminal
    host = views.decode_json(row["host"], {}) or None
    return _json(
        {
            "terminal_id": row["terminal_id"],
            "store_id": row["store_id"],
            "agent_id": row["agent_id"],
            "agent_version": row["agent_version"],
            "state": row["state"],
            "first_seen": row["first_seen"],
            "last_seen": row["last_seen"],
            "last_event_ts": row["last_event_ts"],
            "spool_backlog": row["spool_backlog"],
            "clock_offset_ms": row["clock_offset_ms"],
            "clock_ts": row["clock_ts"],
            "host": host,
            "host_ts": row["host_ts"],
            "probes": [views.probe_item(p) for p in found.probes],
            "devices": [views.device_item(d) for d in found.devices],
            "recent_failures": [views.txn_item(t) for t in found.recent_failures],
            "in_doubt": found.in_doubt,
            "open_incidents": [incident_json(i) for i in found.open_incidents],
        }
    )


@viewer_only
async def get_timeline(request: web.Request) -> web.Response:
    """``GET /api/v1/terminals/{terminal_id}/timeline``: its events, newest first."""
    params = Params(request.query, ("since", "until", "kind", "limit", "cursor"))
    since, until = params.time_range()
    kinds = params.choices("kind", EVENT_KIND_NAMES)
    limit = params.limit()
    after = params.cursor("timeline", (str, int))
    terminal_id = request.match_info["terminal_id"]

    def read(conn: Any) -> list[Any] | None:
        if not queries.terminal_exists(conn, terminal_id):
            return None
        return queries.timeline_page(
            conn, terminal_id, since=since, until=until, kinds=kinds, after=after, limit=limit
        )

    rows = await _reader(request).read(read)
    if rows is None:
        return _not_found(f"no terminal {terminal_id!r} has reported to this collector")
    return _json(_page(rows, limit, "timeline", lambda r: (r["ts"], r["id"]), views.timeline_item))


# --- transactions and incidents ------------------------------------------------------------

_TXN_PARAMS = (
    "terminal", "store", "acquirer", "outcome", "cause", "in_doubt", "failed",
    "since", "until", "limit", "cursor",
)  # fmt: skip


@viewer_only
async def list_transactions(request: web.Request) -> web.Response:
    """``GET /api/v1/transactions``: payments, newest first, with cause and evidence."""
    params = Params(request.query, _TXN_PARAMS)
    since, until = params.time_range()
    flt = queries.TxnFilter(
        terminal=params.text("terminal"),
        store=params.text("store"),
        acquirer=params.text("acquirer", max_len=256),
        outcome=params.choice("outcome", OUTCOMES),
        cause=params.choice("cause", CAUSES),
        in_doubt=params.boolean("in_doubt"),
        failed=params.boolean("failed"),
        since=since,
        until=until,
    )
    limit = params.limit()
    after = params.cursor("transactions", (str, str, str))
    rows = await _reader(request).read(
        lambda conn: queries.txns_page(conn, flt, after=after, limit=limit)
    )
    key = lambda r: (r["ts"], r["terminal_id"], r["txn_id"])  # noqa: E731
    return _json(_page(rows, limit, "transactions", key, views.txn_item))


@viewer_only
async def list_incidents(request: web.Request) -> web.Response:
    """``GET /api/v1/incidents``: incidents, newest first by start."""
    params = Params(
        request.query,
        ("state", "kind", "cause", "store", "acquirer", "since", "until", "limit", "cursor"),
    )
    since, until = params.time_range()
    flt = queries.IncidentFilter(
        state=params.choice("state", INCIDENT_STATES) or "all",
        kind=params.choice("kind", INCIDENT_KINDS),
        cause=params.choice("cause", CAUSES),
        store=params.text("store"),
        acquirer=params.text("acquirer", max_len=256),
        since=since,
        until=until,
    )
    limit = params.limit()
    after = params.cursor("incidents", (str, int))
    rows = await _reader(request).read(
        lambda conn: queries.incidents_page(conn, flt, after=after, limit=limit)
    )
    key = lambda r: (r["started_at"], r["id"])  # noqa: E731
    return _json(_page(rows, limit, "incidents", key, incident_json))


@viewer_only
async def get_incident(request: web.Request) -> web.Response:
    """``GET /api/v1/incidents/{incident_id}``: one incident."""
    Params(request.query, ())
    text = request.match_info["incident_id"]
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise QueryError("incident_id", f"{text[:64]!r} is not an incident id (a number)")
    incident_id = int(text)
    row = None
    if incident_id <= MAX_ID:
        row = await _reader(request).read(lambda conn: queries.incident(conn, incident_id))
    if row is None:
        return _not_found(f"no incident {incident_id}")
    return _json(incident_json(row))


ROUTES: Final[tuple[tuple[str, str, Handler], ...]] = (
    ("GET", f"{PREFIX}/fleet", get_fleet),
    ("GET", f"{PREFIX}/terminals", list_terminals),
    ("GET", f"{PREFIX}/terminals/{{terminal_id}}", get_terminal),
    ("GET", f"{PREFIX}/terminals/{{terminal_id}}/timeline", get_timeline),
    ("GET", f"{PREFIX}/transactions", list_transactions),
    ("GET", f"{PREFIX}/incidents", list_incidents),
    ("GET", f"{PREFIX}/incidents/{{incident_id}}", get_incident),
)
