"""The correlator's status() and its behaviour when the database fails, in a collector app
served on loopback in this process (so the test can read the Correlator object)."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

import protocol
from collector.app import create_app, create_runner
from collector.correlate.service import CORRELATOR_KEY, Correlator
from collector.settings import CollectorSettings
from collector.storage.sqlite import SqliteStorage
from protocol import AgentInfo, Report
from tests.collector.correlate.servicekit import now_s, txn, window

WAIT_S = 30.0


class Served:
    def __init__(self, app: web.Application, url: str, db: Path) -> None:
        self.app = app
        self.url = url
        self.db = db
        self.seq = 0

    @property
    def correlator(self) -> Correlator:
        return self.app[CORRELATOR_KEY]

    async def post(self, token: str, *events: Any) -> None:
        numbered = []
        for ev in events:
            self.seq += 1
            numbered.append(dataclasses.replace(ev, seq=self.seq))
        report = Report(
            agent=AgentInfo(id="agent-1", terminal_id="T-1", store_id="S-1", version="0.1.0"),
            sent_at=now_s(),
            events=tuple(numbered),
        )
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.url + "/api/v1/reports",
                data=protocol.encode_report(report),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            ) as resp,
        ):
            assert resp.status == 200, await resp.text()

    async def until(self, check: Any) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_S):
            while True:
                status = self.correlator.status()
                if check(status):
                    return status
                await asyncio.sleep(0.02)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Served, str]]:
    db = tmp_path / "collector.db"
    storage = SqliteStorage(str(db))
    app = create_app(CollectorSettings(db=str(db)), storage)
    runner = create_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    token = await storage.create_token("agent", terminal_id="T-1", store_id="S-1")
    try:
        yield Served(app, f"http://{host}:{port}", db), token
    finally:
        await runner.cleanup()


async def test_status_is_idle_only_when_everything_stored_was_read(
    served: tuple[Served, str],
) -> None:
    s, token = served
    status = await s.until(lambda st: st["idle"])
    assert status["pending_events"] == 0 and status["passes"] >= 1
    assert status["last_error"] is None and status["attributed_total"] == 0

    t = now_s() - timedelta(minutes=5)
    await s.post(token, window(t, "isp", "9.9.9.9", fail=True), txn(t, "x1", "timeout"))
    # ingest woke the correlator before it answered: not idle until a pass read the events
    assert s.correlator.status()["idle"] is False
    status = await s.until(lambda st: st["idle"])
    assert status["last_rowid"] == 2 and status["pending_events"] == 0
    assert status["attributed_total"] == 1 and status["revised_total"] == 0


async def test_a_failing_database_is_logged_once_retried_and_recovered(
    served: tuple[Served, str],
) -> None:
    s, token = served
    await s.until(lambda st: st["idle"])
    block = sqlite3.connect(s.db, timeout=10)
    try:
        for op in ("INSERT", "UPDATE"):
            block.execute(
                f"CREATE TRIGGER no_cursor_{op.lower()} BEFORE {op} ON correlator_cursor"
                " BEGIN SELECT RAISE(ABORT, 'the disk says no'); END"
            )
        block.commit()
        t = now_s() - timedelta(minutes=5)
        with capture_logs() as logs:
            await s.post(token, txn(t, "x1", "timeout"))
            status = await s.until(lambda st: st["failed_passes"] >= 3)
            assert "the disk says no" in status["last_error"] and status["idle"] is False
            assert status["last_rowid"] == 0  # the cursor did not move
            # nothing of the failed pass stayed: the cursor and its derived rows go together
            assert block.execute("SELECT count(*) FROM txns").fetchone()[0] == 0
            for op in ("insert", "update"):
                block.execute(f"DROP TRIGGER no_cursor_{op}")
            block.commit()
            status = await s.until(lambda st: st["idle"])
        assert status["last_error"] is None and status["last_rowid"] == 1
        names = [entry["event"] for entry in logs if entry["event"].startswith("correlator_")]
        assert names == ["correlator_failing", "correlator_recovered"]
        assert block.execute("SELECT cause FROM txns").fetchone()[0] is not None
    finally:
        block.close()
