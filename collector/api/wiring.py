"""How the query API plugs into the collector's app: routes, reader, OpenAPI document."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

import orjson
from aiohttp import web

from ..app import STORAGE_KEY
from . import openapi, routes
from .reader import SqliteReader

OPENAPI_PATH: Final = f"{routes.PREFIX}/openapi.json"


class _Document:
    """The OpenAPI document's bytes, built on first request (all routes are known then)."""

    def __init__(self) -> None:
        self.body: bytes | None = None


OPENAPI_KEY: Final = web.AppKey("api_openapi", _Document)


def served_paths(app: web.Application) -> frozenset[str]:
    """The path templates the app's router serves (``/api/v1/terminals/{terminal_id}``)."""
    paths = set()
    for resource in app.router.resources():
        info = resource.get_info()
        paths.add(str(info.get("formatter") or info.get("path") or ""))
    return frozenset(paths)


async def get_openapi(request: web.Request) -> web.Response:
    """``GET /api/v1/openapi.json``: the OpenAPI document of this collector (no token)."""
    doc = request.app[OPENAPI_KEY]
    if doc.body is None:
        doc.body = orjson.dumps(openapi.document(served_paths(request.app)))
    return web.Response(body=doc.body, content_type="application/json")


async def _reader_ctx(app: web.Application) -> AsyncIterator[None]:
    reader = app[routes.READER_KEY]
    reader.start()
    try:
        yield
    finally:
        await reader.stop()


def install(app: web.Application) -> None:
    """Add the query API's routes, and its read-only connections to start-up and shutdown."""
    path = getattr(app[STORAGE_KEY], "path", None)
    if not isinstance(path, str):
        raise RuntimeError("the query API reads SQLite storage only (the storage has no path)")
    app[routes.READER_KEY] = SqliteReader(path)
    app[OPENAPI_KEY] = _Document()
    app.cleanup_ctx.append(_reader_ctx)  # after the storage's: the file exists, migrated
    for method, path, handler in routes.ROUTES:
        app.router.add_route(method, path, handler)
    app.router.add_get(OPENAPI_PATH, get_openapi)
