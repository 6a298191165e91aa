"""E-mail alerts from the collector app to a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import email
import email.policy
import shutil
import ssl
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from structlog.testing import capture_logs

from collector.settings import AlertSettings
from tests.helpers import self_signed_cert

from .conftest import Mailbox, free_port, incident, running_app, wait_until


def _settings(port: int, **changes: object) -> AlertSettings:
    values: dict[str, object] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_from": "posmon <posmon@shop.example>",
        "smtp_to": ("it@shop.example", "oncall@shop.example"),
        "retry_initial_s": 0.02,
        "retry_max_s": 0.1,
        **changes,
    }
    return AlertSettings(**values)  # type: ignore[arg-type]


def _parsed(mailbox: Mailbox, index: int = 0) -> EmailMessage:
    content = mailbox.messages[index].original_content
    assert content is not None
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_opened_incident_mail(
    tmp_path: Path, smtp_server: Controller, mailbox: Mailbox
) -> None:
    async with running_app(tmp_path / "c.db", _settings(smtp_server.port)) as app:
        assert await app.queue(incident()) == 1
        await wait_until(lambda: app.rows()[0]["delivered_at"] is not None, "delivered")
        assert app.worker.counters.delivered == {"email": 1}

    assert len(mailbox.messages) == 1
    envelope = mailbox.messages[0]
    assert envelope.mail_from == "posmon@shop.example"
    assert envelope.rcpt_tos == ["it@shop.example", "oncall@shop.example"]
    message = _parsed(mailbox)
    assert message["Subject"] == "[posmon] OPEN: isp — store S12 — 3 failed payments, 1 in doubt"
    assert message["To"] == "it@shop.example, oncall@shop.example"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"].endswith("@shop.example>")
    assert message.get_content_type() == "text/plain"
    text = message.get_content()
    assert "posmon opened an incident." in text
    assert "Store S12 lost its internet connection" in text
    assert "Cause:      isp (the store's internet connection failed)" in text
    assert "Where:      store S12" in text and "Terminals:  T-1, T-2" in text
    assert "Since:      2024-05-01 10:00:00 UTC" in text
    assert "Call the store's internet provider" in text
    assert "IN DOUBT: 1 payment may have charged the customer" in text
    assert "acquirer before charging again" in text


async def test_closed_incident_mail(
    tmp_path: Path, smtp_server: Controller, mailbox: Mailbox
) -> None:
    closed = incident(
        scope="acquirer", acquirer="acq-north", cause="acquirer_outage", store_id=None,
        state="closed", ended_at="2024-05-01T10:30:00.000000Z", failed_count=41, in_doubt_count=0,
    )  # fmt: skip
    async with running_app(tmp_path / "c.db", _settings(smtp_server.port)) as app:
        await app.queue(closed, "closed")
        await wait_until(lambda: len(mailbox.messages) == 1, "delivered")
    message = _parsed(mailbox)
    assert (
        message["Subject"]
        == "[posmon] CLOSED: acquirer_outage — acquirer acq-north — 41 failed payments"
    )
    text = message.get_content()
    assert "posmon closed an incident: it is over." in text
    assert "Ended:      2024-05-01 10:30:00 UTC" in text
    assert "IN DOUBT" not in text


async def test_login(tmp_path: Path, mailbox: Mailbox) -> None:
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=free_port(),
        authenticator=mailbox.authenticate, auth_require_tls=False,
    )  # fmt: skip
    controller.start()
    try:
        settings = _settings(controller.port, smtp_username="posmon", smtp_password="pw")
        async with running_app(tmp_path / "c.db", settings) as app:
            await app.queue(incident())
            await wait_until(lambda: len(mailbox.messages) == 1, "delivered")
    finally:
        controller.stop()
    assert mailbox.logins == ["posmon"]


async def test_wrong_password_is_retried_with_a_hint(tmp_path: Path, mailbox: Mailbox) -> None:
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=free_port(),
        authenticator=mailbox.authenticate, auth_require_tls=False,
    )  # fmt: skip
    controller.start()
    try:
        settings = _settings(controller.port, smtp_username="posmon", smtp_password="wrong")
        async with running_app(tmp_path / "c.db", settings) as app:
            await app.queue(incident())
            await wait_until(lambda: app.rows()[0]["attempts"] >= 2, "retried")
            row = app.rows()[0]
    finally:
        controller.stop()
    assert row["gave_up_at"] is None and row["delivered_at"] is None
    assert "refused the login as 'posmon' (535" in row["last_error"]
    assert "smtp_password" in row["last_error"]
    assert mailbox.messages == []


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
async def test_starttls_verifies_the_server_then_logs_in(
    tmp_path: Path, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed_cert(tmp_path, "smtp")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=free_port(), tls_context=context,
        require_starttls=True, authenticator=mailbox.authenticate,
    )  # fmt: skip
    controller.start()
    settings = _settings(
        controller.port, smtp_starttls=True, smtp_username="posmon", smtp_password="pw"
    )
    try:
        # first the collector does not trust the certificate: retried, nothing sent
        async with running_app(tmp_path / "c.db", settings) as app:
            await app.queue(incident())
            await wait_until(lambda: app.rows()[0]["attempts"] >= 1, "attempted")
            assert "TLS failed" in app.rows()[0]["last_error"]
            assert mailbox.messages == []
        # then it does (the system trust store, here through SSL_CERT_FILE): delivered
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        async with running_app(tmp_path / "c.db", settings) as app:
            await wait_until(lambda: app.rows()[0]["delivered_at"] is not None, "delivered")
    finally:
        controller.stop()
    assert len(mailbox.messages) == 1 and mailbox.logins == ["posmon"]


async def test_refused_recipient_gives_up_at_once(
    tmp_path: Path, smtp_server: Controller, mailbox: Mailbox
) -> None:
    settings = _settings(smtp_server.port, smtp_to=("nobody@shop.example",))
    mailbox.refuse = {"nobody@shop.example"}
    with capture_logs() as logs:
        async with running_app(tmp_path / "c.db", settings) as app:
            await app.queue(incident())
            await wait_until(lambda: app.rows()[0]["gave_up_at"] is not None, "given up")
            row = app.rows()[0]
    assert row["attempts"] == 1
    assert "refused every recipient (nobody@shop.example: 550 5.1.1" in row["last_error"]
    assert [e["channel"] for e in logs if e["event"] == "alert_given_up"] == ["email"]


async def test_one_refused_recipient_of_two_is_delivered_with_a_note(
    tmp_path: Path, smtp_server: Controller, mailbox: Mailbox
) -> None:
    mailbox.refuse = {"oncall@shop.example"}
    async with running_app(tmp_path / "c.db", _settings(smtp_server.port)) as app:
        await app.queue(incident())
        await wait_until(lambda: app.rows()[0]["delivered_at"] is not None, "delivered")
        row = app.rows()[0]
    assert mailbox.messages[0].rcpt_tos == ["it@shop.example"]
    assert "some recipients refused: oncall@shop.example: 550" in row["last_error"]


async def test_server_down_then_up(tmp_path: Path, mailbox: Mailbox) -> None:
    port = free_port()  # nothing listens there yet
    async with running_app(tmp_path / "c.db", _settings(port)) as app:
        await app.queue(incident())
        await wait_until(lambda: app.rows()[0]["attempts"] >= 2, "retried while down")
        assert app.rows()[0]["delivered_at"] is None
        controller = Controller(mailbox, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            await wait_until(lambda: app.rows()[0]["delivered_at"] is not None, "delivered")
        finally:
            controller.stop()
    assert len(mailbox.messages) == 1
