"""Fixtures for the query API tests: a real collector holding the small fleet of viewdata."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.collector.viewdata import Fleet, seed_fleet
from tests.collector.wire import Reply, request
from tests.helpers import start_collector


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A collector with the fleet of tests/collector/viewdata.py (read-only tests only)."""
    collector = start_collector(tmp_path_factory.mktemp("api") / "collector.db")
    try:
        yield seed_fleet(collector)
    finally:
        collector.stop()


def get(url: str, token: str | None, path: str, **params: Any) -> Reply:
    """``GET /api/v1/<path>?params`` (None values left out)."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return request(url, f"/api/v1/{path}" + (f"?{query}" if query else ""), token=token)


def ok(url: str, token: str, path: str, **params: Any) -> Any:
    """The JSON of a GET that must answer 200."""
    reply = get(url, token, path, **params)
    assert reply.status == 200, (reply.status, reply.body)
    assert reply.headers["Content-Type"].startswith("application/json")
    return reply.json()


def walk(url: str, token: str, path: str, **params: Any) -> list[list[Any]]:
    """Every page of a list, following next_cursor; returns the pages' items."""
    pages: list[list[Any]] = []
    cursor = None
    while True:
        page = ok(url, token, path, cursor=cursor, **params)
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 10_000, "pagination does not end"
