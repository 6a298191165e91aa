"""The collector's query API: what people and tools read (viewer tokens).

- :mod:`.routes`   the handlers and their routes under ``/api/v1``
- :mod:`.params`   query parameters checked one by one; keyset cursors
- :mod:`.queries`  the SQL (read-only connections)
- :mod:`.views`    rows as the API's JSON; one-line event summaries
- :mod:`.reader`   read-only SQLite connections in threads of their own
- :mod:`.openapi`  the OpenAPI document served at ``/api/v1/openapi.json``

The JSON is the contract with the ``posmon`` CLI and the dashboard: fields may
be added, never renamed.
"""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Add the query API's routes, and its read-only connections to start-up and shutdown."""
    # imported here: collector.app imports this package before it defines the app keys
    from .wiring import install

    install(app)
