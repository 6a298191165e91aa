"""TCP connect probe, and the connection helpers the TLS and HTTP probes share.

``probe_once`` resolves the host, then times the TCP handshake alone
(``rtt_ms`` excludes name resolution, which is reported as extras
``dns_ms``). Error codes: ``timeout``, ``refused``, ``reset``,
``unreachable`` (no route, network down, any other connect failure) and
``dns`` (the name did not resolve).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import ssl
import time
from typing import Any

from .base import ProbeResult

AddrInfo = tuple[int, int, int, str, Any]

#: How long a probe waits for a polite close before it aborts the connection.
CLOSE_GRACE_S = 1.0

_RESET_ERRNOS = {errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE}
_REFUSED_ERRNOS = {errno.ECONNREFUSED}


class DnsError(Exception):
    """The name did not resolve."""


def now_ms() -> float:
    return time.perf_counter() * 1000.0


def classify_os_error(exc: BaseException) -> str:
    """The tcp error code for an exception raised while connecting or talking."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, DnsError | socket.gaierror):
        return "dns"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return "reset"
    if isinstance(exc, OSError):
        if exc.errno in _REFUSED_ERRNOS:
            return "refused"
        if exc.errno in _RESET_ERRNOS:
            return "reset"
        if exc.errno == errno.ETIMEDOUT:
            return "timeout"
    return "unreachable"


def numeric(host: str, port: int, type_: int) -> list[AddrInfo] | None:
    """The address info of an IP literal, without the resolver's thread pool; else None."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.version == 4:
        return [(socket.AF_INET, type_, 0, "", (host, port))]
    return [(socket.AF_INET6, type_, 0, "", (host, port, 0, 0))]


async def resolve(host: str, port: int) -> list[AddrInfo]:
    """Addresses for ``host``; raises :class:`DnsError` when it does not resolve.

    An IP literal is used as it is (``loop.getaddrinfo`` would run in a thread
    for it, on every attempt).
    """
    literal = numeric(host, port, socket.SOCK_STREAM)
    if literal is not None:
        return literal
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DnsError(str(exc)) from exc
    if not infos:
        raise DnsError(f"{host}: no address")
    return [(int(f), int(t), p, c, a) for f, t, p, c, a in infos]


async def connect(infos: list[AddrInfo]) -> socket.socket:
    """A connected non-blocking socket to the first address that answers."""
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for family, type_, proto, _name, addr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, addr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    assert last is not None
    raise last


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close politely for a short while, then abort; never raises but cancellation."""
    writer.close()
    closed = False
    try:
        async with asyncio.timeout(CLOSE_GRACE_S):
            await writer.wait_closed()
        closed = True
    except (OSError, ssl.SSLError, TimeoutError):
        pass
    finally:
        if not closed:
            writer.transport.abort()
    if not closed:
        for _ in range(3):  # let the transport's close callbacks run
            await asyncio.sleep(0)


async def probe_once(host: str, port: int, *, timeout_s: float) -> ProbeResult:
    """Time one TCP connect to ``host:port``."""
    extras: dict[str, float | str] = {}
    sock: socket.socket | None = None
    try:
        async with asyncio.timeout(timeout_s):
            t0 = now_ms()
            infos = await resolve(host, port)
            t1 = now_ms()
            extras["dns_ms"] = t1 - t0
            sock = await connect(infos)
            rtt = now_ms() - t1
            extras["address"] = str(sock.getpeername()[0])
    except (OSError, DnsError) as exc:
        return ProbeResult(ok=False, error=classify_os_error(exc), extras=extras)
    finally:
        if sock is not None:
            sock.close()
    return ProbeResult(ok=True, rtt_ms=rtt, extras=extras)
