"""HTTP(S) GET probe on plain asyncio streams (the agent does not import aiohttp).

One ``GET`` with ``Connection: close``; only the status line and headers are
read, never the body. Phase timings go into extras, in milliseconds:
``dns_ms`` (name resolution), ``connect_ms`` (TCP handshake), ``tls_ms``
(TLS handshake, https only), ``first_byte_ms`` (request sent → first byte of
the answer); plus ``status``. ``rtt_ms`` is the whole time from the start of
resolution to the first byte of the answer.

A result is ok when the server answered with a status below 500: a 404 or a
401 still proves the server and the path to it work. Error codes:
``http_5xx`` (status ≥ 500), ``http_bad_response`` (no answer, or not an
HTTP status line), the TLS codes of :mod:`agent.probes.tls` for https and
the TCP codes of :mod:`agent.probes.tcp`.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from urllib.parse import urlsplit

from protocol.fields import Scalar

from . import tcp, tls
from .base import ProbeResult

_STATUS_LINE = re.compile(rb"^HTTP/\d(?:\.\d)? (\d{3})(?: |\r?\n|$)")
#: How much of the answer's head the probe reads at most.
MAX_HEAD = 16 * 1024


class BadResponse(Exception):
    """The peer answered, but not with HTTP."""


def parse_status(line: bytes) -> int:
    """The status code of an HTTP/1.x status line; raises :class:`BadResponse`."""
    match = _STATUS_LINE.match(line)
    if not match:
        raise BadResponse(line[:64].decode("latin-1"))
    return int(match.group(1))


def build_request(host_header: str, target: str) -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\n"
        f"Host: {host_header}\r\n"
        "User-Agent: posmon-agent\r\n"
        "Accept: */*\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")


async def _exchange(url: str, extras: dict[str, Scalar], cafile: str | None) -> tuple[int, float]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    host = parts.hostname
    port = parts.port or (443 if scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    default_port = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    host_header = f"[{host}]" if ":" in host else host
    if not default_port:
        host_header += f":{port}"

    t0 = tcp.now_ms()
    infos = await tcp.resolve(host, port)
    t1 = tcp.now_ms()
    extras["dns_ms"] = t1 - t0
    if scheme == "https":
        ctx = ssl.create_default_context(cafile=cafile)
        sock = await tcp.connect(infos)
        t2 = tcp.now_ms()
        extras["connect_ms"] = t2 - t1
        try:
            reader, writer = await asyncio.open_connection(sock=sock, ssl=ctx, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        extras["tls_ms"] = tcp.now_ms() - t2
    else:
        sock = await tcp.connect(infos)
        extras["connect_ms"] = tcp.now_ms() - t1
        try:
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
    try:
        writer.write(build_request(host_header, target))
        await writer.drain()
        t3 = tcp.now_ms()
        first = await reader.read(1)
        t4 = tcp.now_ms()
        if not first:
            raise BadResponse("connection closed without an answer")
        extras["first_byte_ms"] = t4 - t3
        try:
            line = first + await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            line = first + exc.partial
        except asyncio.LimitOverrunError as exc:
            raise BadResponse("status line too long") from exc
        status = parse_status(line)
        extras["status"] = status
        return status, t4 - t0
    finally:
        await tcp.close_writer(writer)


async def probe_once(url: str, *, timeout_s: float, cafile: str | None = None) -> ProbeResult:
    """One GET of ``url``; see the module docstring for what is measured."""
    extras: dict[str, Scalar] = {}
    try:
        async with asyncio.timeout(timeout_s):
            status, rtt = await _exchange(url, extras, cafile)
    except BadResponse:
        return ProbeResult(ok=False, error="http_bad_response", extras=extras)
    except ssl.SSLCertVerificationError as exc:
        return ProbeResult(ok=False, error=tls.classify_verify_error(exc), extras=extras)
    except ssl.SSLError:
        return ProbeResult(ok=False, error="tls_handshake_failed", extras=extras)
    except (OSError, tcp.DnsError) as exc:
        return ProbeResult(ok=False, error=tcp.classify_os_error(exc), extras=extras)
    if status >= 500:
        return ProbeResult(ok=False, error="http_5xx", extras=extras)
    return ProbeResult(ok=True, rtt_ms=rtt, extras=extras)
