"""A small, blocking HTTP/1.1 client for the uplink, on the standard library.

The agent sends one request at a time to one collector, so it needs no
client framework: ``http.client`` with one kept-alive connection, run on the
uplink's own worker thread. (An aiohttp client costs the agent about 11 MiB
of RSS on import — a quarter of its memory budget.)

Errors::

    HttpError       the request did not complete: refused, reset, timed out,
                    TLS failure, or a response that is not HTTP
"""

from __future__ import annotations

import http.client
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path


class HttpError(Exception):
    """The request did not complete (no HTTP status to act on)."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    retry_after: str | None


class Poster:
    """POSTs to one base URL over one kept-alive connection. Use from one thread."""

    def __init__(self, base_url: str, *, timeout_s: float, ca_file: Path | None = None) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self.base_path = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self._context: ssl.SSLContext | None = None
        if self.https:
            self._context = ssl.create_default_context(
                cafile=str(ca_file) if ca_file is not None else None
            )
            self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self, timeout_s: float) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.https:
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=timeout_s, context=self._context
                )
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
        elif self._conn.sock is not None:
            self._conn.sock.settimeout(timeout_s)
        self._conn.timeout = timeout_s
        return self._conn

    def post(
        self, path: str, body: bytes, headers: dict[str, str], timeout_s: float | None = None
    ) -> HttpResponse:
        """POST and read the whole answer.

        A kept-alive connection the server has meanwhile closed is retried
        once on a fresh one: uploads are idempotent (the collector drops
        duplicates by agent id and seq).
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        for attempt in (1, 2):
            reused = self._conn is not None and self._conn.sock is not None
            conn = self._connection(timeout)
            try:
                conn.request("POST", self.base_path + path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as err:
                self.close()
                if reused and attempt == 1:
                    continue
                raise HttpError(f"{type(err).__name__}: {err}") from err
            except (OSError, http.client.HTTPException) as err:
                self.close()
                raise HttpError(f"{type(err).__name__}: {err}") from err
            if resp.will_close:
                self.close()
            return HttpResponse(resp.status, data, resp.getheader("Retry-After"))
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
