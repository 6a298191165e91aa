"""Incident alerts: a webhook and e-mail, delivered from the outbox with retries.

    outbox.py    the alert_outbox table: enqueue (the correlator), due rows, records
    delivery.py  DeliveryError (retry or give up) and the backoff
    webhook.py   POST the JSON payload (aiohttp)
    mail.py      a plain-text e-mail over SMTP (smtplib in a thread)
    service.py   the worker that delivers due rows and records each attempt

:func:`setup` puts an :class:`~.service.AlertWorker` under :data:`ALERTS_KEY`
and runs it while the app runs. The correlator calls
``app[ALERTS_KEY].wake()`` after committing a transaction that queued alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from ..settings import AlertSettings
from .delivery import Sender
from .mail import EmailSender
from .service import AlertWorker
from .webhook import WebhookSender

ALERTS_KEY: Final = web.AppKey("alerts", AlertWorker)

__all__ = ["ALERTS_KEY", "AlertWorker", "senders", "setup"]


def senders(settings: AlertSettings) -> dict[str, Sender]:
    """The configured channels' senders (none when alerts are off)."""
    out: dict[str, Sender] = {}
    if settings.webhook_url is not None:
        out["webhook"] = WebhookSender(settings.webhook_url, settings.webhook_timeout_s)
    if settings.smtp_host is not None:
        out["email"] = EmailSender(settings)
    return out


async def _alerts_ctx(app: web.Application) -> AsyncIterator[None]:
    from ..app import STORAGE_KEY  # here: collector.app imports this package
    from ..storage import SqliteStorage

    storage = app[STORAGE_KEY]
    if not isinstance(storage, SqliteStorage):
        raise TypeError(f"alert delivery needs the SQLite storage, not {type(storage).__name__}")
    worker = app[ALERTS_KEY]
    await worker.start(storage.writer)
    task = asyncio.create_task(worker.run(), name="alert-delivery")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()


def setup(app: web.Application) -> None:
    """Deliver incident alerts while the app runs (after the storage opens)."""
    from ..app import SETTINGS_KEY

    app[ALERTS_KEY] = AlertWorker(app[SETTINGS_KEY].alerts, senders(app[SETTINGS_KEY].alerts))
    app.cleanup_ctx.append(_alerts_ctx)
