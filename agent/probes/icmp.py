"""ICMP echo probe ("ping"): a pure echo codec and one echo per attempt.

The pure part builds an echo request (ICMP type 8, or ICMPv6 type 128, with
the Internet checksum) and parses what an ICMP socket receives into a
:class:`Message`: echo requests and replies carry their :class:`Echo`,
destination-unreachable and time-exceeded messages carry the echo request
they quote.  :func:`outcome` says what a message means for the echo we sent.
Garbage, truncated packets and bad checksums raise :class:`IcmpError` and
nothing else.

:func:`probe_once` opens its own socket, of one of two kinds (see
:func:`icmp_socket_kind`):

- ``raw`` (``SOCK_RAW``, needs CAP_NET_RAW): receives every ICMP message of
  the host, IPv4 ones with their IP header; we match identifier, sequence
  number and payload, so concurrent probes never take each other's replies.
- ``dgram`` (``SOCK_DGRAM``, allowed when the sysctl
  ``net.ipv4.ping_group_range`` includes our group): the kernel strips the IP
  header, sets the identifier itself and hands us only our own replies; we
  match sequence number and payload.  ICMP errors arrive on the socket's
  error queue (``IP_RECVERR``).

When neither is allowed it raises :class:`ProbeUnavailable` saying so.

Error codes: ``timeout`` (no answer in time), ``unreachable`` (a destination
unreachable about our echo, or sending failed: no route, network down),
``ttl_exceeded`` (a time exceeded about our echo) and ``dns`` (the name did
not resolve).  Extras: ``resolved`` (the address probed) and, for
``unreachable``/``ttl_exceeded`` reported by a router, ``reported_by``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import secrets
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from . import tcp
from .base import ProbeResult, ProbeUnavailable

ECHO_REPLY, DEST_UNREACH, ECHO_REQUEST, TIME_EXCEEDED = 0, 3, 8, 11
ECHO6_REQUEST, ECHO6_REPLY, DEST6_UNREACH, TIME6_EXCEEDED = 128, 129, 1, 3
#: Largest payload of one echo in one IPv4 datagram (65535 − 20 − 8).
MAX_PAYLOAD = 65507

# Linux socket options the socket module of Python 3.11 does not name.
_SOL_RAW, _ICMP_FILTER = 255, 1
_IP_RECVERR, _IPV6_RECVERR = 11, 25
_EE_ORIGIN_ICMP, _EE_ORIGIN_ICMP6 = 2, 3
_EE = struct.Struct("=IBBBBII")  # struct sock_extended_err
_HEADER = struct.Struct("!BBHHH")
#: Room past our payload for an IP header (≤ 60) and an ICMP error's quote (≤ 576).
_RECV_SLACK = 1024
_PING_GROUP_RANGE = "/proc/sys/net/ipv4/ping_group_range"
_RECVERR_CMSGS = {(socket.IPPROTO_IP, _IP_RECVERR), (socket.IPPROTO_IPV6, _IPV6_RECVERR)}
_UNSUPPORTED = {errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT}
_idents = itertools.count(secrets.randbelow(0x10000))


class IcmpError(ValueError):
    """An ICMP packet is malformed: truncated, bad IP header or bad checksum."""


@dataclass(frozen=True, slots=True)
class Echo:
    """The identifying part of an echo request or reply."""

    ident: int
    seq: int
    payload: bytes = b""

    def __post_init__(self) -> None:
        if not (0 <= self.ident <= 0xFFFF and 0 <= self.seq <= 0xFFFF):
            raise ValueError(f"identifier {self.ident} or sequence {self.seq} not 16-bit")
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(self.payload)} bytes is too large")


@dataclass(frozen=True, slots=True)
class Message:
    """One ICMP message: its type and code, and the echo it carries or quotes."""

    type: int
    code: int
    echo: Echo | None = None


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``; 0 over a packet that has a valid one."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_echo(echo: Echo, *, v6: bool = False, reply: bool = False) -> bytes:
    """An echo request (or, for tests, a reply) carrying ``echo``.

    ICMPv6 checksums cover a pseudo-header the kernel knows: we leave them 0.
    """
    if v6:
        kind = ECHO6_REPLY if reply else ECHO6_REQUEST
    else:
        kind = ECHO_REPLY if reply else ECHO_REQUEST
    bare = _HEADER.pack(kind, 0, 0, echo.ident, echo.seq) + echo.payload
    if v6:
        return bare
    return bare[:2] + checksum(bare).to_bytes(2, "big") + bare[4:]


def _ipv4_payload(data: bytes) -> bytes:
    """What an IPv4 datagram carries; raises :class:`IcmpError` if it is not ICMP."""
    if len(data) < 20:
        raise IcmpError(f"{len(data)} bytes are shorter than an IPv4 header")
    ihl = (data[0] & 0x0F) * 4
    total = int.from_bytes(data[2:4], "big")
    if data[0] >> 4 != 4 or ihl < 20:
        raise IcmpError("not an IPv4 header")
    if data[9] != socket.IPPROTO_ICMP:
        raise IcmpError(f"IP protocol {data[9]} is not ICMP")
    if not ihl <= total <= len(data):
        raise IcmpError(f"IPv4 total length {total} does not fit {len(data)} bytes")
    return data[ihl:total]  # bytes past the total length are link padding


def _quoted_echo(quote: bytes, *, v6: bool) -> Echo | None:
    """The echo request an ICMP error quotes (IP header, then ≥ 8 bytes), if any."""
    if v6:
        if len(quote) < 48 or quote[0] >> 4 != 6 or quote[6] != socket.IPPROTO_ICMPV6:
            return None
        inner = quote[40:]
    else:
        ihl = (quote[0] & 0x0F) * 4 if quote else 0
        if len(quote) < ihl + 8 or quote[0] >> 4 != 4 or ihl < 20:
            return None
        if quote[9] != socket.IPPROTO_ICMP:
            return None
        inner = quote[ihl:]
    kind, _code, _sum, ident, seq = _HEADER.unpack_from(inner)
    if kind != (ECHO6_REQUEST if v6 else ECHO_REQUEST):
        return None
    return Echo(ident, seq, inner[8 : 8 + MAX_PAYLOAD])


def parse(data: bytes, *, v6: bool = False, ip_header: bool = False) -> Message:
    """Parse what an ICMP socket received; raise :class:`IcmpError` if malformed.

    ``ip_header``: the bytes start with an IPv4 header (raw IPv4 sockets);
    IPv6 sockets never deliver one.  IPv4 checksums are verified; ICMPv6 ones
    cover a pseudo-header and were verified by the kernel.
    """
    if ip_header:
        if v6:
            raise ValueError("IPv6 sockets do not deliver the IP header")
        data = _ipv4_payload(data)
    if len(data) < 8:
        raise IcmpError(f"{len(data)} bytes are shorter than an ICMP header")
    if not v6 and checksum(data) != 0:
        raise IcmpError("bad ICMP checksum")
    kind, code, _sum, ident, seq = _HEADER.unpack_from(data)
    if kind in ((ECHO6_REQUEST, ECHO6_REPLY) if v6 else (ECHO_REQUEST, ECHO_REPLY)):
        if len(data) - 8 > MAX_PAYLOAD:
            raise IcmpError("echo payload too large")
        return Message(kind, code, Echo(ident, seq, data[8:]))
    if kind in ((DEST6_UNREACH, TIME6_EXCEEDED) if v6 else (DEST_UNREACH, TIME_EXCEEDED)):
        return Message(kind, code, _quoted_echo(data[8:], v6=v6))
    return Message(kind, code)


def outcome(message: Message, sent: Echo, *, v6: bool = False, match_ident: bool = True) -> str:
    """``ok``, ``unreachable`` or ``ttl_exceeded`` if ``message`` answers ``sent``, else ``""``.

    ``match_ident`` is False for datagram sockets, whose identifier the
    kernel rewrites (and which receive only their own replies anyway).
    """
    echo = message.echo
    if echo is None or echo.seq != sent.seq or (match_ident and echo.ident != sent.ident):
        return ""
    reply, unreach, exceeded = (
        (ECHO6_REPLY, DEST6_UNREACH, TIME6_EXCEEDED)
        if v6
        else (ECHO_REPLY, DEST_UNREACH, TIME_EXCEEDED)
    )
    if message.type == reply:
        return "ok" if echo.payload == sent.payload else ""
    if not sent.payload.startswith(echo.payload):  # a quote may be cut short
        return ""
    return {unreach: "unreachable", exceeded: "ttl_exceeded"}.get(message.type, "")


def queued_error(ancillary: bytes, *, v6: bool = False) -> tuple[str, str | None]:
    """The error code and offender address of one ``IP_RECVERR`` control message.

    ``ancillary`` is a ``struct sock_extended_err`` followed by the offender's
    ``sockaddr``.  An error the kernel raised itself (not from an ICMP
    message) is ``unreachable`` with no offender.
    """
    if len(ancillary) < _EE.size:
        return "unreachable", None
    _errno, origin, kind, _code, _pad, _info, _data = _EE.unpack_from(ancillary)
    if origin != (_EE_ORIGIN_ICMP6 if v6 else _EE_ORIGIN_ICMP):
        return "unreachable", None
    exceeded = TIME6_EXCEEDED if v6 else TIME_EXCEEDED
    code = "ttl_exceeded" if kind == exceeded else "unreachable"
    addr = ancillary[_EE.size :]
    offender: str | None = None
    if v6 and len(addr) >= 24:
        offender = socket.inet_ntop(socket.AF_INET6, addr[8:24])
    elif not v6 and len(addr) >= 8:
        offender = socket.inet_ntop(socket.AF_INET, addr[4:8])
    return code, offender


def _unavailable_reason() -> str:
    try:
        current = " ".join(Path(_PING_GROUP_RANGE).read_text(encoding="ascii").split())
    except OSError as exc:
        current = f"unreadable: {exc.strerror}"
    return (
        "ICMP needs CAP_NET_RAW (for a raw socket) or net.ipv4.ping_group_range "
        f"to include gid {os.getegid()} (for a datagram socket; it is '{current}')"
    )


def open_socket(family: int = socket.AF_INET) -> tuple[socket.socket, str]:
    """A non-blocking ICMP socket and its kind, ``raw`` or ``dgram``.

    Raises :class:`ProbeUnavailable` when this host allows neither.
    """
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    for type_, kind in ((socket.SOCK_RAW, "raw"), (socket.SOCK_DGRAM, "dgram")):
        try:
            sock = socket.socket(family, type_, proto)
        except PermissionError:
            continue
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                raise ProbeUnavailable(f"this host has no ICMP sockets: {exc}") from exc
            raise
        sock.setblocking(False)
        return sock, kind
    raise ProbeUnavailable(_unavailable_reason())


def icmp_socket_kind(family: int = socket.AF_INET) -> str:
    """``raw`` or ``dgram``: what :func:`probe_once` will use; raises ProbeUnavailable."""
    sock, kind = open_socket(family)
    sock.close()
    return kind


def _prepare(sock: socket.socket, kind: str, v6: bool) -> None:
    if kind == "dgram":  # ICMP errors about our echoes come to the error queue
        level, option = (
            (socket.IPPROTO_IPV6, _IPV6_RECVERR) if v6 else (socket.IPPROTO_IP, _IP_RECVERR)
        )
        sock.setsockopt(level, option, 1)
    elif not v6:  # a raw socket sees all ICMP: let only replies and errors wake us
        wanted = (1 << ECHO_REPLY) | (1 << DEST_UNREACH) | (1 << TIME_EXCEEDED)
        with contextlib.suppress(OSError):  # only an optimisation
            sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("=I", ~wanted & 0xFFFFFFFF))


_Answer = tuple[str, float, str | None]  # error code or "ok", perf_counter, reported_by


class _Receiver:
    """Reads a socket when it is readable until the answer to ``sent`` arrives."""

    def __init__(
        self, sock: socket.socket, kind: str, v6: bool, sent: Echo, done: asyncio.Future[_Answer]
    ) -> None:
        self.sock, self.kind, self.v6, self.sent, self.done = sock, kind, v6, sent, done
        # anything longer is not an answer to us (and, cut short, matches nothing)
        self.size = len(sent.payload) + _RECV_SLACK

    def on_readable(self) -> None:
        now = time.perf_counter()
        if self.kind == "dgram":
            self._read_error_queue(now)
        while not self.done.done():
            try:
                data, addr = self.sock.recvfrom(self.size)
            except BlockingIOError:
                return
            except OSError:
                if self.kind == "dgram":  # an error about our echo the queue did not hold
                    self.done.set_result(("unreachable", now, None))
                return
            try:
                message = parse(data, v6=self.v6, ip_header=self.kind == "raw" and not self.v6)
            except IcmpError:
                continue
            code = outcome(message, self.sent, v6=self.v6, match_ident=self.kind == "raw")
            if code:
                self.done.set_result((code, now, None if code == "ok" else str(addr[0])))

    def _read_error_queue(self, now: float) -> None:
        while not self.done.done():
            try:
                _data, ancdata, _flags, _addr = self.sock.recvmsg(0, 512, socket.MSG_ERRQUEUE)
            except OSError:  # empty (EAGAIN)
                return
            for level, type_, ancillary in ancdata:
                if (level, type_) in _RECVERR_CMSGS:
                    code, offender = queued_error(ancillary, v6=self.v6)
                    self.done.set_result((code, now, offender))
                    return


async def probe_once(host: str, *, timeout_s: float, payload_size: int = 56) -> ProbeResult:
    """Send one echo request to ``host`` and wait for its answer; never raises for a
    target failure.  Raises :class:`ProbeUnavailable` when ICMP is not allowed here.
    """
    if not 0 <= payload_size <= MAX_PAYLOAD:
        raise ValueError(f"payload_size {payload_size} is outside 0…{MAX_PAYLOAD}")
    loop = asyncio.get_running_loop()
    # a random token first, so that even another process's echoes never match ours
    filler = bytes(range(256)) * (payload_size // 256 + 1)
    payload = (secrets.token_bytes(8) + filler)[:payload_size]
    sent = Echo(next(_idents) & 0xFFFF, secrets.randbelow(0x10000), payload)
    extras: dict[str, str] = {}
    sock: socket.socket | None = None
    try:
        async with asyncio.timeout(timeout_s):
            try:
                infos = tcp.numeric(host, 0, socket.SOCK_RAW) or await loop.getaddrinfo(
                    host, None, type=socket.SOCK_RAW
                )
            except socket.gaierror:
                return ProbeResult(ok=False, error="dns")
            infos = [i for i in infos if i[0] in (socket.AF_INET, socket.AF_INET6)]
            if not infos:
                return ProbeResult(ok=False, error="dns")
            family, _type, _proto, _name, address = infos[0]
            extras["resolved"] = str(address[0])
            v6 = family == socket.AF_INET6
            sock, kind = open_socket(family)
            _prepare(sock, kind, v6)
            done: asyncio.Future[_Answer] = loop.create_future()
            receiver = _Receiver(sock, kind, v6, sent, done)
            loop.add_reader(sock.fileno(), receiver.on_readable)
            try:
                start = time.perf_counter()
                try:
                    await loop.sock_sendto(sock, build_echo(sent, v6=v6), address)
                except OSError:
                    return ProbeResult(ok=False, error="unreachable", extras=extras)
                code, end, reported_by = await done
            finally:
                loop.remove_reader(sock.fileno())
    except TimeoutError:
        return ProbeResult(ok=False, error="timeout", extras=extras)
    finally:
        if sock is not None:
            sock.close()
    rtt_ms = (end - start) * 1000.0
    if code == "ok":
        return ProbeResult(ok=True, rtt_ms=rtt_ms, extras=extras)
    if reported_by is not None:
        extras["reported_by"] = reported_by
    return ProbeResult(ok=False, rtt_ms=rtt_ms, error=code, extras=extras)
