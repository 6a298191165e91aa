"""Webhook alerts from the collector app to a real receiver on loopback."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

from structlog.testing import capture_logs

from collector.alerts.webhook import USER_AGENT
from collector.settings import AlertSettings

from .conftest import Receiver, incident, running_app, wait_until


def _settings(url: str, give_up_after_s: float = 86400.0) -> AlertSettings:
    return AlertSettings(
        webhook_url=url,
        webhook_timeout_s=5.0,
        retry_initial_s=0.02,
        retry_max_s=0.1,
        give_up_after_s=give_up_after_s,
    )


async def test_alert_is_posted_as_json_with_headers(tmp_path: Path, receiver: Receiver) -> None:
    async with running_app(tmp_path / "c.db", _settings(receiver.url)) as app:
        assert await app.queue(incident()) == 1
        await wait_until(lambda: app.rows()[0]["delivered_at"] is not None, "delivered")
        row = app.rows()[0]

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert json.loads(request.body) == {"event": "incident_opened", "incident": incident()}
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == USER_AGENT and "posmon" in USER_AGENT
    assert request.headers["X-Posmon-Event"] == "incident_opened"
    assert request.headers["X-Posmon-Alert-Id"] == str(row["id"])
    assert row["attempts"] == 1 and row["gave_up_at"] is None and row["last_error"] is None
    assert app.worker.counters.delivered == {"webhook": 1}


async def test_5xx_is_retried_until_delivered_exactly_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.fail_first = 3
    with capture_logs() as logs:
        async with running_app(tmp_path / "c.db", _settings(receiver.url)) as app:
            await app.queue(incident())
            await wait_until(lambda: app.rows()[0]["delivered_at"] is not None, "delivered")
            row = app.rows()[0]
            counters = app.worker.counters

    assert [r.status for r in receiver.requests] == [500, 500, 500, 200]
    assert len(receiver.accepted) == 1
    assert row["attempts"] == 4 and row["gave_up_at"] is None
    assert counters.failed_attempts == {"webhook": 3} and counters.delivered == {"webhook": 1}
    events = [e["event"] for e in logs if e["event"].startswith("alert_")]
    # a change of state is logged once, not every failed attempt
    assert events == ["alert_delivery_failing", "alert_delivery_recovered", "alert_delivered"]
    failing = next(e for e in logs if e["event"] == "alert_delivery_failing")
    assert "answered 500" in failing["error"] and "s3cret" not in failing["error"]


async def test_408_and_429_are_retried(tmp_path: Path, receiver: Receiver) -> None:
    receiver.fail_first, receiver.fail_status = 1, 429
    receiver.extra_headers = {"Retry-After": "0"}
    async with running_app(tmp_path / "c.db", _settings(receiver.url)) as app:
        await app.queue(incident())
        await wait_until(lambda: len(receiver.accepted) == 1, "delivered after 429")
        receiver.fail_first, receiver.fail_status = len(receiver.requests) + 1, 408
        await app.queue(incident(id=8))
        await wait_until(lambda: len(receiver.accepted) == 2, "delivered after 408")
        rows = app.rows()
    assert [r.status for r in receiver.requests] == [429, 200, 408, 200]
    assert [r["attempts"] for r in rows] == [2, 2]


async def test_4xx_is_given_up_at_once_and_logged(tmp_path: Path, receiver: Receiver) -> None:
    receiver.fail_first, receiver.fail_status = 1, 404
    with capture_logs() as logs:
        async with running_app(tmp_path / "c.db", _settings(receiver.url)) as app:
            await app.queue(incident())
            await wait_until(lambda: app.rows()[0]["gave_up_at"] is not None, "given up")
            # the next alert still goes out: the receiver refused one alert, it is not down
            await app.queue(incident(id=8))
            await wait_until(lambda: app.rows()[1]["delivered_at"] is not None, "next delivered")
            rows = app.rows()
            counters = app.worker.counters

    assert [r.status for r in receiver.requests] == [404, 200]
    assert rows[0]["attempts"] == 1 and rows[0]["delivered_at"] is None
    assert "refused the alert with 404: nope" in rows[0]["last_error"]
    assert counters.gave_up == {"webhook": 1} and counters.delivered == {"webhook": 1}
    given_up = [e for e in logs if e["event"] == "alert_given_up"]
    assert len(given_up) == 1 and given_up[0]["incident_id"] == 7
    assert not [e for e in logs if e["event"] == "alert_delivery_failing"]


async def test_receiver_down_then_up(tmp_path: Path, receiver: Receiver) -> None:
    await receiver.stop()  # its port is closed now
    async with running_app(tmp_path / "c.db", _settings(receiver.url)) as app:
        await app.queue(incident())
        await wait_until(lambda: app.rows()[0]["attempts"] >= 2, "retried while down")
        row = app.rows()[0]
        assert row["delivered_at"] is None and "cannot connect" in row["last_error"]
        await receiver.start()  # the same port again
        await wait_until(lambda: app.rows()[0]["delivered_at"] is not None, "delivered")
    assert len(receiver.requests) == 1 and len(receiver.accepted) == 1


async def test_closed_never_overtakes_opened(tmp_path: Path, receiver: Receiver) -> None:
    receiver.fail_first = 2
    async with running_app(tmp_path / "c.db", _settings(receiver.url)) as app:
        await app.queue(incident())
        await app.queue(incident(state="closed", ended_at="2024-05-01T10:20:00.000000Z"), "closed")
        await wait_until(lambda: len(receiver.accepted) == 2, "both delivered")
    events = [json.loads(r.body)["event"] for r in receiver.requests]
    assert events == ["incident_opened"] * 3 + ["incident_closed"]


async def test_closed_waits_for_its_opened_alert_after_a_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    db = tmp_path / "c.db"
    receiver.fail_first = 1
    slow = dataclasses.replace(_settings(receiver.url), retry_initial_s=3000, retry_max_s=3600)
    async with running_app(db, slow) as app:
        await app.queue(incident())
        await wait_until(lambda: app.rows()[0]["attempts"] == 1, "first attempt failed")
    # restarted: no memory of the failure; the opened alert is due in about an hour
    async with running_app(db, slow) as app:
        await app.queue(incident(state="closed"), "closed")
        await app.worker.round()
        assert [r["delivered_at"] for r in app.rows()] == [None, None]
        assert len(receiver.requests) == 1
        _make_due(db)  # an hour later
        await wait_until(lambda: len(receiver.accepted) == 2, "both delivered")
    events = [json.loads(r.body)["event"] for r in receiver.accepted]
    assert events == ["incident_opened", "incident_closed"]


def _make_due(db: Path) -> None:
    conn = sqlite3.connect(db, timeout=30)
    with conn:
        conn.execute("UPDATE alert_outbox SET next_attempt_at = created_at")
    conn.close()


async def test_an_alert_not_delivered_in_time_is_given_up(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.fail_first = 10**6  # never accepts
    settings = _settings(receiver.url, give_up_after_s=1.0)
    with capture_logs() as logs:
        async with running_app(tmp_path / "c.db", settings) as app:
            await app.queue(incident())
            await wait_until(lambda: app.rows()[0]["gave_up_at"] is not None, "given up")
            row = app.rows()[0]
            counters = app.worker.counters
            requests = len(receiver.requests)
    assert requests >= 1 and row["attempts"] == requests and row["delivered_at"] is None
    assert row["last_error"].startswith("not delivered within 1 s; last error: ")
    assert counters.gave_up == {"webhook": 1}
    given_up = [e for e in logs if e["event"] == "alert_given_up"]
    assert len(given_up) == 1 and given_up[0]["reason"] == "not delivered within 1 s"
