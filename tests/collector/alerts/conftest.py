"""Real receivers on loopback for the alert tests, and the collector app in process.

- :class:`Receiver`: an aiohttp webhook receiver on ``127.0.0.1:0`` that answers
  a chosen status for its first calls, then 200, and keeps every request.
- :class:`Mailbox`: an aiosmtpd server (in its own thread) that keeps every
  message, optionally refusing recipients or asking for a login.
- :func:`running_app`: ``collector.app.create_app`` on a SQLite file, started
  through its runner (storage, then the alert worker) without a listening site.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from collector.alerts import ALERTS_KEY, AlertWorker
from collector.alerts.outbox import Transition, enqueue
from collector.app import STORAGE_KEY, create_app, create_runner
from collector.settings import AlertSettings, CollectorSettings
from collector.storage import SqliteStorage
from collector.storage.sqlite_writer import SqliteWriter

WAIT_S = 30.0


def incident(**changes: Any) -> dict[str, Any]:
    """An incident as the API shows it: the ISP of store S12 failed."""
    base: dict[str, Any] = {
        "id": 7,
        "kind": "payments",
        "cause": "isp",
        "scope": "store",
        "store_id": "S12",
        "acquirer": None,
        "terminal_id": None,
        "device": None,
        "title": "Store S12 lost its internet connection",
        "action": "Call the store's internet provider; check the router's WAN light.",
        "state": "open",
        "started_at": "2024-05-01T10:00:00.000000Z",
        "ended_at": None,
        "last_seen_at": "2024-05-01T10:04:00.000000Z",
        "opened_at": "2024-05-01T10:01:00.000000Z",
        "closed_at": None,
        "terminals": ["T-1", "T-2"],
        "failed_count": 3,
        "in_doubt_count": 1,
    }
    base.update(changes)
    return base


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` (a generous limit, never an asserted timing)."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        await asyncio.sleep(0.02)


def outbox_rows(db: Path | str) -> list[dict[str, Any]]:
    """The alert_outbox table as dicts, by id (a connection of the test's own)."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM alert_outbox ORDER BY id")]
    finally:
        conn.close()


# --- webhook receiver -----------------------------------------------------------------


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered


@dataclass
class Receiver:
    """Answers ``fail_status`` to the first ``fail_first`` calls, then 200."""

    fail_first: int = 0
    fail_status: int = 500
    extra_headers: dict[str, str] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/posmon?secret=s3cret"

    @property
    def accepted(self) -> list[Request]:
        return [r for r in self.requests if r.status == 200]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.fail_status if len(self.requests) < self.fail_first else 200
        self.requests.append(Request(dict(request.headers), body, status))
        headers = self.extra_headers if status != 200 else {}
        return web.Response(status=status, text="nope" if status != 200 else "ok", headers=headers)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/posmon", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    await rec.start()
    try:
        yield rec
    finally:
        await rec.stop()


# --- SMTP server ----------------------------------------------------------------------


@dataclass
class Mailbox:
    """What the SMTP server received; ``refuse`` rcpt addresses get 550."""

    messages: list[Envelope] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    logins: list[str] = field(default_factory=list)

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope)
        return "250 Message accepted"

    def authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"posmon", b"pw")
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def smtp_server(mailbox: Mailbox) -> Iterator[Controller]:
    """A plain SMTP server on loopback (no TLS, no login)."""
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


# --- the collector app, in process ----------------------------------------------------


@dataclass
class App:
    app: web.Application
    db: Path

    @property
    def worker(self) -> AlertWorker:
        return self.app[ALERTS_KEY]

    async def queue(self, inc: dict[str, Any], transition: Transition = "opened") -> int:
        """Queue alerts as the correlator does (inside a write) and wake the worker."""
        settings = self.worker.settings
        now = datetime.now(UTC)
        added = await _writer(self.app).write(
            lambda conn: enqueue(conn, settings, inc, transition, now)
        )
        self.worker.wake()
        return added

    def rows(self) -> list[dict[str, Any]]:
        return outbox_rows(self.db)


def _writer(app: web.Application) -> SqliteWriter:
    storage = app[STORAGE_KEY]
    assert isinstance(storage, SqliteStorage)
    return storage.writer


@asynccontextmanager
async def running_app(db: Path, alerts: AlertSettings) -> AsyncIterator[App]:
    """The collector app with these [alerts] settings, started (storage and worker)."""
    settings = CollectorSettings(db=str(db), alerts=alerts)
    app = create_app(settings, SqliteStorage(settings.db))
    runner = create_runner(app)
    await runner.setup()
    try:
        yield App(app, db)
    finally:
        await runner.cleanup()
