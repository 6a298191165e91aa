"""The real collector process: [alerts] from its config file, and an alert that outlives
a crash (SIGKILL) in the database and is delivered after the restart."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from collector.alerts.outbox import enqueue
from collector.settings import load_settings
from tests.helpers import CollectorProc, start_collector

from .conftest import Receiver, incident, outbox_rows, wait_until


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(
        f'[server]\ndb = "{tmp_path / "c.db"}"\n'
        f'[alerts]\nwebhook_url = "{url}"\nwebhook_timeout_s = 5.0\n'
        "retry_initial_s = 0.05\nretry_max_s = 0.2\n"
    )
    return path


async def _start(db: Path, config: Path) -> CollectorProc:
    return await asyncio.to_thread(start_collector, db, ["--config", str(config)])


async def test_alert_survives_a_crash_and_is_delivered_after_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.fail_first, receiver.fail_status = 10**6, 503  # down for now
    config = _config(tmp_path, receiver.url)
    db = tmp_path / "c.db"
    collector = await _start(db, config)
    try:
        # queue an alert as the correlator would, in the collector's database file
        alerts = load_settings(config=config).alerts
        conn = sqlite3.connect(db, timeout=30)
        try:
            with conn:
                assert enqueue(conn, alerts, incident(), "opened", datetime.now(UTC)) == 1
        finally:
            conn.close()
        await wait_until(lambda: len(receiver.requests) >= 2, "attempts while the receiver fails")
    finally:
        await asyncio.to_thread(collector.kill)

    [row] = outbox_rows(db)
    assert row["delivered_at"] is None and row["gave_up_at"] is None
    assert row["attempts"] >= 2 and "answered 503" in row["last_error"]
    failing = [e for e in collector.log_events() if e["event"] == "alert_delivery_failing"]
    assert len(failing) == 1 and "s3cret" not in str(failing)
    assert receiver.accepted == []

    receiver.fail_first = 0  # the receiver is back
    collector = await _start(db, config)
    try:
        await wait_until(lambda: outbox_rows(db)[0]["delivered_at"] is not None, "delivered")
    finally:
        await asyncio.to_thread(collector.stop)
    assert len(receiver.accepted) == 1
    delivered = [e for e in collector.log_events() if e["event"] == "alert_delivered"]
    assert [(e["incident_id"], e["channel"]) for e in delivered] == [(7, "webhook")]
