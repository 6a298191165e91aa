"""The e-mail channel: a plain-text message per alert over SMTP.

:func:`compose` (pure) turns a stored payload into the message: a subject a
person can triage from the inbox (``[posmon] OPEN: isp — store S12 — 3 failed
payments, 1 in doubt``) and a body saying what, where, since when, what to do,
and that payments in doubt must be checked with the acquirer before charging
again.

:class:`EmailSender` sends it with the standard library's :mod:`smtplib` in a
thread: STARTTLS when ``smtp_starttls``, login when ``smtp_username`` and
``smtp_password`` are set. smtplib's and the socket's exceptions become
:class:`~.delivery.DeliveryError` here: a 5xx reply to the sender, the
recipients or the message gives up (the server refuses this message); a
refused login or a missing STARTTLS/AUTH is retried (a setting to fix, after
which waiting alerts still go out), as are 4xx replies, timeouts, refused
connections and TLS errors.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
from collections.abc import Mapping
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime as rfc2822_date
from email.utils import parseaddr
from typing import Any, Final

from ..settings import AlertSettings
from .delivery import DeliveryError
from .outbox import Alert

#: one SMTP conversation (connect, STARTTLS, login, send) must finish within this
SMTP_TIMEOUT_S: Final = 30.0
_MAX_SUBJECT: Final = 200
_MAX_TERMINALS_LISTED: Final = 20

#: each cause in a few words (DESIGN.md, "Causes")
CAUSE_MEANING: Final[Mapping[str, str]] = {
    "power": "the terminal or store lost power",
    "link": "the terminal's own network connection was down",
    "gateway": "the store's router or LAN failed",
    "isp": "the store's internet connection failed",
    "dns": "names did not resolve",
    "acquirer_path": "this store could not reach the acquirer",
    "acquirer_outage": "the acquirer was down",
    "clock": "the terminal's clock was wrong",
    "device": "the PIN pad or card reader failed",
    "host": "the POS host was starved (CPU, memory or disk)",
    "unknown": "no evidence explains it",
}


def _one_line(value: Any) -> str:
    """A value fit for a header or a field: no line breaks or control characters."""
    text = "" if value is None else str(value)
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def where(incident: Mapping[str, Any]) -> str:
    """Where the incident is, in words: ``store S12``, ``acquirer acq-1``, ..."""
    scope = incident.get("scope")
    store = _one_line(incident.get("store_id"))
    terminal = _one_line(incident.get("terminal_id"))
    in_store = f" (store {store})" if store else ""
    if scope == "acquirer" and incident.get("acquirer"):
        return f"acquirer {_one_line(incident['acquirer'])}"
    if scope == "device" and incident.get("device"):
        on = f" on terminal {terminal}" if terminal else ""
        return f"{_one_line(incident['device'])}{on}{in_store}"
    if scope == "terminal" and terminal:
        return f"terminal {terminal}{in_store}"
    if store:
        return f"store {store}"
    return f"terminal {terminal}" if terminal else "the fleet"


def _counts(incident: Mapping[str, Any]) -> str | None:
    failed = int(incident.get("failed_count") or 0)
    in_doubt = int(incident.get("in_doubt_count") or 0)
    if not failed and not in_doubt:
        return None
    text = _plural(failed, "failed payment")
    return f"{text}, {in_doubt} in doubt" if in_doubt else text


def subject(payload: Mapping[str, Any]) -> str:
    """``[posmon] OPEN: isp — store S12 — 3 failed payments, 1 in doubt``."""
    incident = payload.get("incident") or {}
    state = "CLOSED" if payload.get("event") == "incident_closed" else "OPEN"
    parts = [_one_line(incident.get("cause") or "unknown"), where(incident)]
    counts = _counts(incident)
    if counts is not None:
        parts.append(counts)
    text = f"[posmon] {state}: " + " — ".join(parts)
    return text if len(text) <= _MAX_SUBJECT else text[: _MAX_SUBJECT - 1] + "…"


def _when(value: Any) -> str:
    if not isinstance(value, str):
        return "—"
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return _one_line(value)
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def _terminals(incident: Mapping[str, Any]) -> str | None:
    terminals = [_one_line(t) for t in incident.get("terminals") or ()]
    if not terminals:
        return None
    shown = ", ".join(terminals[:_MAX_TERMINALS_LISTED])
    more = len(terminals) - _MAX_TERMINALS_LISTED
    return f"{shown} and {more} more" if more > 0 else shown


def body(payload: Mapping[str, Any]) -> str:
    """The message text: what, where, since when, what to do, payments in doubt."""
    incident = payload.get("incident") or {}
    closed = payload.get("event") == "incident_closed"
    cause = _one_line(incident.get("cause") or "unknown")
    lines = [
        "posmon closed an incident: it is over." if closed else "posmon opened an incident.",
        "",
        _one_line(incident.get("title")) or f"{cause} at {where(incident)}",
        "",
        f"Cause:      {cause} ({CAUSE_MEANING.get(cause, 'see the collector')})",
        f"Where:      {where(incident)}",
    ]
    terminals = _terminals(incident)
    if terminals is not None:
        lines.append(f"Terminals:  {terminals}")
    lines.append(f"Since:      {_when(incident.get('started_at'))}")
    if closed:
        lines.append(f"Ended:      {_when(incident.get('ended_at'))}")
    counts = _counts(incident)
    if counts is not None:
        lines.append(f"Payments:   {counts}")
    action = str(incident.get("action") or "").strip()
    if action:
        lines += ["", "What to do:", *(f"  {line}" for line in action.splitlines())]
    in_doubt = int(incident.get("in_doubt_count") or 0)
    if in_doubt:
        lines += [
            "",
            f"IN DOUBT: {_plural(in_doubt, 'payment')} may have charged the customer. Verify"
            " each one's status with the acquirer before charging again.",
        ]
    lines += [
        "",
        "-- ",
        f"Incident {incident.get('id', '?')} ({incident.get('kind', '?')}), opened"
        f" {_when(incident.get('opened_at'))}, sent by the posmon collector.",
    ]
    return "\n".join(lines) + "\n"


def _domain(address: str) -> str:
    _, addr = parseaddr(address)
    domain = addr.rpartition("@")[2]
    return domain if domain and all(c.isalnum() or c in ".-" for c in domain) else "localhost"


def compose(alert: Alert, settings: AlertSettings) -> EmailMessage:
    """The e-mail for ``alert``; the same message (and Message-ID) on every attempt."""
    try:
        payload = json.loads(alert.payload)
    except ValueError:
        payload = None
    if not isinstance(payload, dict) or not isinstance(payload.get("incident"), dict):
        raise DeliveryError("the stored alert is not an incident payload", retry=False)
    message = EmailMessage()
    try:
        message["Subject"] = subject(payload)
        message["From"] = settings.smtp_from
        message["To"] = ", ".join(settings.smtp_to)
    except ValueError as err:  # a header the e-mail library refuses (e.g. a bad smtp_from)
        raise DeliveryError(f"cannot build the e-mail: {err}", retry=False) from err
    message["Date"] = rfc2822_date(alert.created_at)
    stamp = alert.created_at.strftime("%Y%m%d%H%M%S")
    message["Message-ID"] = f"<posmon-alert-{alert.id}-{stamp}@{_domain(settings.smtp_from)}>"
    message["Auto-Submitted"] = "auto-generated"
    message["X-Posmon-Event"] = f"incident_{alert.transition}"
    message["X-Posmon-Incident"] = str(alert.incident_id)
    message.set_content(body(payload))
    return message


def _reply(code: int, text: bytes | str) -> str:
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {_one_line(raw)}"


class EmailSender:
    """Delivers alerts to ``smtp_to`` through ``smtp_host``, one connection per alert."""

    channel: Final = "email"

    def __init__(self, settings: AlertSettings) -> None:
        if settings.smtp_host is None:
            raise ValueError("EmailSender needs [alerts] smtp_host")
        self.settings = settings
        self.host = settings.smtp_host
        self.target = f"{settings.smtp_host}:{settings.smtp_port}"

    async def start(self) -> None:
        """Nothing to acquire: each alert opens its own SMTP connection."""

    async def close(self) -> None:
        """Nothing to release."""

    async def send(self, alert: Alert) -> str | None:
        message = compose(alert, self.settings)
        return await asyncio.to_thread(self._deliver, message)

    def _deliver(self, message: EmailMessage) -> str | None:
        """Blocking: one SMTP conversation. Returns the recipients refused, if some were."""
        s = self.settings
        try:
            with smtplib.SMTP(self.host, s.smtp_port, timeout=SMTP_TIMEOUT_S) as smtp:
                if s.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if s.smtp_username is not None and s.smtp_password is not None:
                    smtp.login(s.smtp_username, s.smtp_password)
                refused = smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as err:
            replies = err.recipients
            retry = any(code < 500 for code, _ in replies.values())
            listed = "; ".join(f"{rcpt}: {_reply(*reply)}" for rcpt, reply in replies.items())
            raise DeliveryError(
                f"{self.target} refused every recipient ({listed})", retry=retry
            ) from err
        except smtplib.SMTPAuthenticationError as err:
            raise DeliveryError(
                f"{self.target} refused the login as {s.smtp_username!r}"
                f" ({_reply(err.smtp_code, err.smtp_error)}); check [alerts] smtp_username"
                " and smtp_password",
                retry=True,
            ) from err
        except smtplib.SMTPNotSupportedError as err:
            raise DeliveryError(
                f"{self.target}: {err}; check [alerts] smtp_starttls, smtp_username", retry=True
            ) from err
        except smtplib.SMTPResponseException as err:
            raise DeliveryError(
                f"{self.target} answered {_reply(err.smtp_code, err.smtp_error)}",
                retry=err.smtp_code < 500,
            ) from err
        except ssl.SSLError as err:
            raise DeliveryError(
                f"{self.target}: TLS failed ({err.reason or err})", retry=True
            ) from err
        except TimeoutError as err:
            raise DeliveryError(
                f"{self.target} did not answer within {SMTP_TIMEOUT_S:g} s", retry=True
            ) from err
        except (smtplib.SMTPException, OSError) as err:  # disconnected, refused, unreachable
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            raise DeliveryError(f"{self.target}: {reason}", retry=True) from err
        if refused:
            listed = "; ".join(f"{rcpt}: {_reply(*reply)}" for rcpt, reply in refused.items())
            return f"some recipients refused: {listed}"
        return None
