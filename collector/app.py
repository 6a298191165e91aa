"""The collector's HTTP application: report ingest and health.

``create_app(settings, storage)`` builds the aiohttp application; the storage
is opened and closed by the app's ``cleanup_ctx``. Serve it through
:func:`create_runner`, which turns off aiohttp's own request decompression:
the protocol's :func:`~protocol.decompress` must see the raw body to bound
what a gzip body inflates to.

Every error answer is JSON ``{"error": ...}`` (a protocol error adds
``field``). Nothing is stored for a rejected report. The app logs changes of
state (storage failing or recovering, unexpected errors), not requests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import structlog
from aiohttp import hdrs, web

from protocol import ProtocolError, decompress, encode_ack
from protocol.fastwire import decode_report_rows

from . import alerts, api, metrics
from .correlate import service as correlate_service
from .settings import CollectorSettings
from .storage import Storage, StorageError, TokenInfo, refusal

log = structlog.get_logger("collector.app")

REPORTS_PATH: Final = "/api/v1/reports"
HEALTH_TIMEOUT_S: Final = 5.0


class StorageHealth:
    """Remembers whether storage last worked, and logs only when that changes."""

    def __init__(self) -> None:
        self.failing = False

    def succeeded(self) -> None:
        if self.failing:
            self.failing = False
            log.info("storage_recovered")

    def failed(self, err: BaseException) -> None:
        if not self.failing:
            self.failing = True
            log.error("storage_failed", error=str(err) or type(err).__name__)


class IngestCounters:
    """What ingest did since start-up (``/metrics`` shows them)."""

    def __init__(self) -> None:
        self.reports = 0
        self.events_stored = 0
        self.duplicates = 0
        #: refused reports by HTTP status
        self.rejected: dict[int, int] = {}

    def refused(self, status: int) -> None:
        self.rejected[status] = self.rejected.get(status, 0) + 1


#: Called (on the event loop, no arguments) after every report that stored new events,
#: e.g. to wake the correlator. A listener must not block.
IngestListener = Callable[[], None]

SETTINGS_KEY: Final = web.AppKey("settings", CollectorSettings)
STORAGE_KEY: Final[web.AppKey[Storage]] = web.AppKey("storage")
HEALTH_KEY: Final = web.AppKey("storage_health", StorageHealth)
COUNTERS_KEY: Final = web.AppKey("ingest_counters", IngestCounters)
LISTENERS_KEY: Final = web.AppKey("ingest_listeners", list[IngestListener])


def error_response(
    status: int, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _unauthorized(message: str) -> web.Response:
    return error_response(401, message, headers={hdrs.WWW_AUTHENTICATE: "Bearer"})


def _too_large(limit: int) -> web.Response:
    response = error_response(413, f"body larger than {limit} bytes; send smaller batches")
    response.force_close()  # do not drain a body we refused to read
    return response


def _storage_unavailable(request: web.Request, err: StorageError) -> web.Response:
    request.app[HEALTH_KEY].failed(err)
    return error_response(503, "storage unavailable; retry later")


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token or len(token) > 256:
        return None
    return token


async def _authenticate(request: web.Request) -> TokenInfo | web.Response:
    token = bearer_token(request.headers.get(hdrs.AUTHORIZATION))
    if token is None:
        return _unauthorized("missing or malformed Authorization header; expected 'Bearer <token>'")
    try:
        info = await request.app[STORAGE_KEY].lookup_token(token)
    except StorageError as err:
        return _storage_unavailable(request, err)
    if info is None:
        return _unauthorized("unknown token")
    return info


async def post_report(request: web.Request) -> web.Response:
    """``POST /api/v1/reports``: store an agent's report and acknowledge its seqs."""
    response = await _post_report(request)
    if response.status != 200:
        request.app[COUNTERS_KEY].refused(response.status)
    return response


async def _post_report(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    auth = await _authenticate(request)
    if isinstance(auth, web.Response):
        return auth
    if auth.kind != "agent":
        return error_response(403, f"a {auth.kind} token cannot upload reports")
    limit = settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return _too_large(limit)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _too_large(limit)
    try:
        raw = decompress(body, request.headers.get(hdrs.CONTENT_ENCODING), max_bytes=limit)
        report = decode_report_rows(raw, max_events=settings.max_events_per_report)
    except ProtocolError as err:
        log.debug("report_rejected", status=err.status, error=err.message, field=err.field)
        return web.Response(
            status=err.status, text=json.dumps(err.to_json()), content_type="application/json"
        )
    reason = refusal(auth, report.agent)
    if reason is not None:
        return error_response(403, reason)
    try:
        ack = await request.app[STORAGE_KEY].ingest(auth, report)
    except StorageError as err:
        return _storage_unavailable(request, err)
    request.app[HEALTH_KEY].succeeded()
    counters = request.app[COUNTERS_KEY]
    counters.reports += 1
    counters.events_stored += ack.stored
    counters.duplicates += ack.duplicates
    if ack.stored:
        for listener in request.app[LISTENERS_KEY]:
            listener()
    log.debug(
        "report_ingested",
        terminal_id=report.agent.terminal_id,
        events=len(report.events),
        stored=ack.stored,
        duplicates=ack.duplicates,
    )
    return web.Response(body=encode_ack(ack), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: 200 when the database answers, 503 otherwise."""
    health = request.app[HEALTH_KEY]
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            await request.app[STORAGE_KEY].ping()
    except (StorageError, TimeoutError) as err:
        health.failed(err)
        return web.json_response(
            {"status": "unavailable", "error": "the database does not answer"}, status=503
        )
    health.succeeded()
    return web.json_response({"status": "ok"})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP errors as JSON; an unexpected exception is logged once and answered with 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        keep = {k: v for k, v in exc.headers.items() if k in (hdrs.ALLOW, hdrs.WWW_AUTHENTICATE)}
        return error_response(exc.status, exc.reason, headers=keep)
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path)
        return error_response(500, "internal error; the collector logged the details")


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    storage = app[STORAGE_KEY]
    await storage.open()
    try:
        yield
    finally:
        await storage.close()


def create_app(settings: CollectorSettings, storage: Storage) -> web.Application:
    """The collector's application; opening ``storage`` happens at start-up."""
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[json_errors])
    app[SETTINGS_KEY] = settings
    app[STORAGE_KEY] = storage
    app[HEALTH_KEY] = StorageHealth()
    app[COUNTERS_KEY] = IngestCounters()
    app[LISTENERS_KEY] = []
    app.cleanup_ctx.append(_storage_ctx)  # first: the others need the storage open
    app.router.add_post(REPORTS_PATH, post_report)
    app.router.add_get("/healthz", healthz)
    # the rest of the collector plugs in here; each adds its routes and background tasks
    correlate_service.setup(app)
    alerts.setup(app)
    api.setup(app)
    metrics.setup(app)
    return app


def create_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """A runner that hands handlers the raw request body (no automatic decompression)."""
    kwargs.setdefault("access_log", None)
    return web.AppRunner(app, auto_decompress=False, **kwargs)
