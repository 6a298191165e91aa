"""The collector's query API over HTTP(S), with the standard library.

    CliError(Exception)   a message for the user and an exit code:
                          2 (EXIT_USAGE) no URL or token, or the API refused a
                            parameter (400; the message names the option);
                          1 (EXIT_FAILED) the collector is unreachable or slow,
                            refused the token (401/403), has no such thing
                            (404), failed (5xx) or did not answer JSON.

urllib's and http.client's exceptions become :class:`CliError` here and
nowhere else.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, Final

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
#: the largest answer read (a page of 1,000 transactions is far smaller)
MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024
#: items asked for per page (the API's maximum)
PAGE_MAX: Final = 1000
VIEWER_HINT: Final = (
    "posmon needs a viewer token: create one on the collector's host with "
    "'posmon-collector token create --db PATH --viewer NAME' and give it with --token "
    "or POSMON_TOKEN."
)
#: the API's query parameters and the posmon options that set them
PARAM_FLAGS: Final = {
    "terminal": "--terminal",
    "store": "--store",
    "acquirer": "--acquirer",
    "outcome": "--outcome",
    "cause": "--cause",
    "in_doubt": "--in-doubt",
    "since": "--since",
    "until": "--until",
    "kind": "--kind",
    "state": "--state",
    "limit": "--limit",
}

Params = Mapping[str, str | None]


class CliError(Exception):
    """Printed as ``posmon: error: <message>``; the process exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def check_url(url: str | None) -> str:
    """The collector's base URL without a trailing slash; CliError (exit 2) if unusable."""
    if not url:
        raise CliError(
            "no collector URL: give --url or set POSMON_URL (e.g. https://collector:8780)",
            EXIT_USAGE,
        )
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"--url {url!r}: expected http://HOST:PORT or https://HOST:PORT", EXIT_USAGE)
    if parts.query or parts.fragment:
        raise CliError(f"--url {url!r}: give the collector's base URL only", EXIT_USAGE)
    return url.strip().rstrip("/")


def check_token(token: str | None) -> str:
    if not token or not token.strip():
        raise CliError("no token: give --token or set POSMON_TOKEN. " + VIEWER_HINT, EXIT_USAGE)
    return token.strip()


def path_of(*segments: str) -> str:
    """``/api/v1/`` plus the segments, each percent-encoded (an id may hold any character)."""
    return "/api/v1/" + "/".join(urllib.parse.quote(s, safe="") for s in segments)


def _error_fields(body: bytes) -> tuple[str, str | None]:
    """The ``error`` and ``field`` of a JSON error answer (or the raw text)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()[:300] or "(no message)", None
    if isinstance(data, dict):
        field = data.get("field")
        return str(data.get("error", "(no message)")), str(field) if field else None
    return str(data)[:300], None


class Client:
    """GET requests to one collector with one bearer token."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 10.0,
        cafile: str | None = None,
        page_size: int = PAGE_MAX,
    ) -> None:
        self.url = check_url(url)
        self.page_size = page_size
        self._token = check_token(token)
        self.timeout = timeout
        self._context: ssl.SSLContext | None = None
        if self.url.startswith("https://"):
            try:
                self._context = ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as err:
                raise CliError(f"--cafile {cafile}: cannot load it: {err}", EXIT_USAGE) from None

    def get(self, path: str, params: Params | None = None) -> Any:
        """The JSON answer of ``GET path?params`` (``None`` values left out)."""
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None})
        url = self.url + path + (f"?{query}" if query else "")
        request = urllib.request.Request(
            url, headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._context) as r:
                body = r.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as err:
            with err:
                raise self._refused(err.code, err.read(64 * 1024), path) from None
        except urllib.error.URLError as err:
            raise self._unreachable(err.reason) from None
        except (TimeoutError, http.client.HTTPException, OSError) as err:
            raise self._unreachable(err) from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise CliError(f"the answer from {self.url}{path} is larger than 64 MiB")
        try:
            return json.loads(body)
        except ValueError:
            raise CliError(
                f"the answer from {self.url}{path} is not JSON; is {self.url} a posmon collector?"
            ) from None

    def items(
        self, path: str, params: Params, *, limit: int | None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` items (``None``: all), following ``next_cursor`` page by page.

        Returns (items, more): ``more`` tells whether the collector has items not fetched.
        """
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            size = (
                self.page_size if limit is None else max(1, min(self.page_size, limit - len(out)))
            )
            page = self.get(path, {**params, "limit": str(size), "cursor": cursor})
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise CliError(f"the answer from {self.url}{path} is not a list of items")
            out.extend(item for item in page["items"] if isinstance(item, dict))
            cursor = page.get("next_cursor")
            if not cursor:
                return out, False
            if limit is not None and len(out) >= limit:
                return out[:limit], True
            if cursor in seen:
                raise CliError(f"{self.url}{path}: the collector repeated a page cursor")
            seen.add(cursor)

    def _unreachable(self, reason: object) -> CliError:
        if isinstance(reason, TimeoutError):
            return CliError(f"no answer from the collector at {self.url} within {self.timeout:g} s")
        if isinstance(reason, ssl.SSLCertVerificationError):
            return CliError(
                f"cannot verify the certificate of {self.url}: {reason.verify_message}; "
                "give the collector's CA with --cafile (or POSMON_CAFILE)"
            )
        text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        return CliError(f"cannot reach the collector at {self.url}: {text}")

    def _refused(self, status: int, body: bytes, path: str) -> CliError:
        message, field = _error_fields(body)
        if status == 400:
            if field in PARAM_FLAGS:
                return CliError(f"{PARAM_FLAGS[field]}: {message}", EXIT_USAGE)
            where = f" (field {field})" if field else ""
            return CliError(f"the collector refused the request: {message}{where}", EXIT_USAGE)
        if status == 401:
            return CliError(
                f"the collector at {self.url} refused the token: {message}. {VIEWER_HINT}"
            )
        if status == 403:
            return CliError(f"this token may not read from {self.url}: {message}. {VIEWER_HINT}")
        if status == 404:
            return CliError(f"not found: {message} ({path})")
        return CliError(f"the collector at {self.url} answered {status} for {path}: {message}")
