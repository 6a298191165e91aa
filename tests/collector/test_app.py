"""collector.app in process, for what a real process cannot be made to do on demand:
a storage that breaks. The storage is the real SQLite one with one method overridden.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

import protocol
from collector.app import STORAGE_KEY, bearer_token, create_app, create_runner
from collector.settings import CollectorSettings
from collector.storage import SqliteStorage, StorageError, TokenInfo
from protocol.fastwire import WireReport
from tests.collector.wire import make_report


class FlakyStorage(SqliteStorage):
    """SQLite storage whose ingest fails with a chosen exception while ``fail`` is set."""

    fail: BaseException | None = None

    async def ingest(self, token: TokenInfo, report: WireReport) -> protocol.Ack:
        if self.fail is not None:
            raise self.fail
        return await super().ingest(token, report)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[object, object]]:
    settings = CollectorSettings(db=str(tmp_path / "c.db"))
    app = create_app(settings, FlakyStorage(settings.db))
    async with TestClient(TestServer(app, auto_decompress=False)) as test_client:
        yield test_client


async def _agent_token(client: TestClient[object, object]) -> str:
    storage = client.app[STORAGE_KEY] if client.app is not None else None
    assert isinstance(storage, FlakyStorage)
    return await storage.create_token("agent", terminal_id="T-1", store_id="S-1")


def _storage(client: TestClient[object, object]) -> FlakyStorage:
    assert client.app is not None
    storage = client.app[STORAGE_KEY]
    assert isinstance(storage, FlakyStorage)
    return storage


async def test_unexpected_error_is_500_logged_once_and_server_stays_up(
    client: TestClient[object, object],
) -> None:
    token = await _agent_token(client)
    _storage(client).fail = RuntimeError("boom")
    body = protocol.encode_report(make_report([1]))

    with capture_logs() as logs:
        resp = await client.post(
            "/api/v1/reports", data=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status == 500
        assert (await resp.json()) == {"error": "internal error; the collector logged the details"}

    failures = [e for e in logs if e["event"] == "request_failed"]
    assert len(failures) == 1
    assert failures[0]["log_level"] == "error" and failures[0]["path"] == "/api/v1/reports"
    _storage(client).fail = None
    resp = await client.post(
        "/api/v1/reports", data=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200
    assert (await client.get("/healthz")).status == 200


async def test_storage_failure_is_503_logged_on_change_only(
    client: TestClient[object, object],
) -> None:
    token = await _agent_token(client)
    headers = {"Authorization": f"Bearer {token}"}
    _storage(client).fail = StorageError("database c.db: disk I/O error")

    with capture_logs() as logs:
        for seq in (1, 2, 3):
            body = protocol.encode_report(make_report([seq]))
            resp = await client.post("/api/v1/reports", data=body, headers=headers)
            assert resp.status == 503
            assert "retry" in (await resp.json())["error"]
        _storage(client).fail = None
        resp = await client.post(
            "/api/v1/reports", data=protocol.encode_report(make_report([4])), headers=headers
        )
        assert resp.status == 200

    assert [e["event"] for e in logs if e["event"].startswith("storage_")] == [
        "storage_failed",
        "storage_recovered",
    ]
    assert await _storage(client).event_count() == 1


async def test_healthz_is_503_when_the_database_is_gone(tmp_path: Path) -> None:
    settings = CollectorSettings(db=str(tmp_path / "c.db"))
    storage = SqliteStorage(settings.db)
    async with TestClient(TestServer(create_app(settings, storage))) as client:
        assert (await (await client.get("/healthz")).json()) == {"status": "ok"}
        await storage.close()  # the database stops answering
        resp = await client.get("/healthz")
        assert resp.status == 503
        assert (await resp.json())["status"] == "unavailable"


def test_runner_leaves_decompression_to_the_protocol(tmp_path: Path) -> None:
    settings = CollectorSettings(db=str(tmp_path / "c.db"))
    runner = create_runner(create_app(settings, SqliteStorage(settings.db)))
    assert runner._kwargs["auto_decompress"] is False


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic abc", None),
        ("Bearer a b", None),
        ("Bearer " + "x" * 300, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token
