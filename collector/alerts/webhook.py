"""The webhook channel: POST the alert's JSON to ``[alerts] webhook_url``.

The body is the outbox row's payload as stored (``{"event": "incident_opened"
| "incident_closed", "incident": {...}}``). Headers: ``Content-Type:
application/json``, ``User-Agent: posmon-collector/<version>``,
``X-Posmon-Event`` (the event) and ``X-Posmon-Alert-Id`` (the outbox row; the
same on every attempt, so a receiver can drop a repeat).

What an answer means: 2xx delivered; 408, 429 and 5xx retry later (honouring a
``Retry-After`` in seconds); any other 4xx gives up at once (the receiver
refuses the alert; retrying cannot change that); 3xx gives up too (redirects
are not followed: set the final address). No answer, a refused connection, a
timeout or a TLS error retries. aiohttp's exceptions become
:class:`~.delivery.DeliveryError` here.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp import hdrs

from agent import __version__

from .delivery import DeliveryError
from .outbox import Alert

USER_AGENT: Final = f"posmon-collector/{__version__}"
#: at most this much of a refusing answer's body is quoted in the error
_SNIPPET_BYTES: Final = 200
_RETRY_STATUSES: Final = frozenset({408, 429})


def describe_url(url: str) -> str:
    """The URL without path or query (which may hold a secret), for logs and errors."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None  # the HTTP-date form is rare for webhooks; the backoff applies
    return float(value.strip())


async def _snippet(response: aiohttp.ClientResponse) -> str:
    try:
        raw = await response.content.read(_SNIPPET_BYTES)
    except (aiohttp.ClientError, TimeoutError):
        return ""
    text = " ".join(raw.decode("utf-8", "replace").split())
    return f": {text}" if text else ""


class WebhookSender:
    """Delivers alerts to one URL with one aiohttp session."""

    channel: Final = "webhook"

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.target = describe_url(url)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers={hdrs.USER_AGENT: USER_AGENT},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, alert: Alert) -> str | None:
        if self._session is None:
            raise RuntimeError("WebhookSender.send before start")
        headers = {
            hdrs.CONTENT_TYPE: "application/json",
            "X-Posmon-Event": f"incident_{alert.transition}",
            "X-Posmon-Alert-Id": str(alert.id),
        }
        try:
            async with self._session.post(
                self.url,
                data=alert.payload.encode("utf-8"),
                headers=headers,
                allow_redirects=False,
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    return None
                detail = await _snippet(response)
                retry_after = _retry_after(response.headers.get(hdrs.RETRY_AFTER))
                location = response.headers.get(hdrs.LOCATION)
        except TimeoutError as err:
            raise DeliveryError(
                f"{self.target} did not answer within {self.timeout_s:g} s", retry=True
            ) from err
        except aiohttp.ClientError as err:
            raise DeliveryError(f"{self.target}: {_client_error(err)}", retry=True) from err
        if status >= 500 or status in _RETRY_STATUSES:
            raise DeliveryError(
                f"{self.target} answered {status}{detail}", retry=True, retry_after_s=retry_after
            )
        if 300 <= status < 400:
            raise DeliveryError(
                f"{self.target} answered {status} (redirect to {location or '?'}); redirects are"
                " not followed: set [alerts] webhook_url to the final address",
                retry=False,
            )
        raise DeliveryError(f"{self.target} refused the alert with {status}{detail}", retry=False)


def _client_error(err: aiohttp.ClientError) -> str:
    text = str(err) or type(err).__name__
    if isinstance(err, aiohttp.ClientConnectorError):
        return f"cannot connect ({err.os_error.strerror or text})"
    return text
