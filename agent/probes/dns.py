"""DNS probe: a small standard-library DNS codec and one UDP query.

The pure part builds a query (RD set, one question) and parses a response:
header, question and every resource record are walked, names may use
compression pointers (a pointer loop is an error, not a hang), A and AAAA
answers are collected.  Any malformed, truncated or garbage packet raises
:class:`DnsError` and nothing else.

:func:`probe_once` sends one query over UDP from a connected datagram socket
(so the kernel drops datagrams from any other address, and an ICMP port
unreachable comes back as ``ConnectionRefusedError``), ignores datagrams whose
transaction id is not ours, and maps the outcome onto an error code:
``nxdomain`` (rcode 3), ``servfail`` (rcode 2), ``dns_refused`` (rcode 5),
``dns_no_answer`` (rcode 0 without an address), ``dns_bad_response``,
``timeout``, ``refused`` (ICMP port unreachable) and ``unreachable`` (no
route, host unreachable).

Tested against a small in-process responder and against Debian's dnsmasq
(tests/agent/probes/test_dns_dnsmasq.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import ProbeResult

QTYPES: dict[str, int] = {"A": 1, "AAAA": 28}
_TYPE_A = 1
_TYPE_AAAA = 28
_CLASS_IN = 1
_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
_MAX_NAME = 255
_RCODE_ERRORS = {2: "servfail", 3: "nxdomain", 5: "dns_refused"}


class DnsError(ValueError):
    """A DNS packet (or a name to put in one) is malformed."""


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """What a response says: its rcode and the A/AAAA addresses it carries."""

    rcode: int
    addresses: tuple[str, ...]


def build_query(name: str, qtype: str = "A", *, txid: int) -> bytes:
    """One standard query (RD set) for ``name`` of type ``qtype`` ("A" or "AAAA")."""
    if not 0 <= txid <= 0xFFFF:
        raise DnsError(f"transaction id {txid} is not a 16-bit number")
    try:
        code = QTYPES[qtype.upper()]
    except KeyError:
        raise DnsError(f"unsupported query type {qtype!r}") from None
    return (
        _HEADER.pack(txid, 0x0100, 1, 0, 0, 0)
        + _encode_name(name)
        + struct.pack("!HH", code, _CLASS_IN)
    )


def _encode_name(name: str) -> bytes:
    stripped = name.rstrip(".")
    if not stripped:
        return b"\x00"
    try:
        raw = stripped.encode("idna")
    except UnicodeError as exc:
        raise DnsError(f"cannot encode name {name!r}: {exc}") from None
    out = bytearray()
    for label in raw.split(b"."):
        if not 1 <= len(label) <= 63:
            raise DnsError(f"name {name!r} has an empty or over-long label")
        out.append(len(label))
        out += label
    out.append(0)
    if len(out) > _MAX_NAME:
        raise DnsError(f"name {name!r} is longer than 255 octets")
    return bytes(out)


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at ``offset`` and the offset just past it (pointers followed)."""
    labels: list[str] = []
    visited: set[int] = set()
    end: int | None = None  # where the name ends in the original stream
    length = 1
    pos = offset
    while True:
        if pos >= len(data):
            raise DnsError("name runs past the end of the packet")
        first = data[pos]
        kind = first & 0xC0
        if kind == 0xC0:
            if pos + 1 >= len(data):
                raise DnsError("compression pointer cut short")
            target = ((first & 0x3F) << 8) | data[pos + 1]
            if target in visited:
                raise DnsError("compression pointer loop")
            visited.add(target)
            if end is None:
                end = pos + 2
            pos = target
        elif kind != 0:
            raise DnsError(f"unsupported label type 0x{first:02x}")
        elif first == 0:
            return ".".join(labels), (end if end is not None else pos + 1)
        else:
            stop = pos + 1 + first
            if stop > len(data):
                raise DnsError("label runs past the end of the packet")
            length += first + 1
            if length > _MAX_NAME:
                raise DnsError("name longer than 255 octets")
            labels.append(data[pos + 1 : stop].decode("ascii", errors="replace"))
            pos = stop


def parse_response(data: bytes, *, txid: int) -> DnsAnswer:
    """Parse a response to our query ``txid``; raise :class:`DnsError` if malformed."""
    if len(data) < _HEADER.size:
        raise DnsError(f"packet of {len(data)} bytes is shorter than a DNS header")
    rid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if rid != txid:
        raise DnsError(f"transaction id {rid} is not ours ({txid})")
    if not flags & 0x8000:
        raise DnsError("packet is a query, not a response")
    rcode = flags & 0x000F
    pos = _HEADER.size
    for _ in range(qdcount):
        _, pos = _read_name(data, pos)
        pos += 4
        if pos > len(data):
            raise DnsError("question runs past the end of the packet")
    addresses: list[str] = []
    for index in range(ancount + nscount + arcount):
        _, pos = _read_name(data, pos)
        if pos + _RR_FIXED.size > len(data):
            raise DnsError("resource record header runs past the end of the packet")
        rtype, rclass, _ttl, rdlength = _RR_FIXED.unpack_from(data, pos)
        pos += _RR_FIXED.size
        rdata = data[pos : pos + rdlength]
        if len(rdata) != rdlength:
            raise DnsError("resource record data runs past the end of the packet")
        pos += rdlength
        if index >= ancount or rclass != _CLASS_IN:
            continue
        if rtype == _TYPE_A:
            if rdlength != 4:
                raise DnsError(f"A record of {rdlength} bytes")
            addresses.append(str(ipaddress.IPv4Address(rdata)))
        elif rtype == _TYPE_AAAA:
            if rdlength != 16:
                raise DnsError(f"AAAA record of {rdlength} bytes")
            addresses.append(str(ipaddress.IPv6Address(rdata)))
    return DnsAnswer(rcode=rcode, addresses=tuple(addresses))


def system_resolver(path: str = "/etc/resolv.conf") -> str | None:
    """The first ``nameserver`` of a resolv.conf, or None if there is none."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            return words[1]
    return None


class _Client(asyncio.DatagramProtocol):
    def __init__(self, txid: int, done: asyncio.Future[tuple[bytes | None, OSError | None]]):
        self.txid = txid
        self.done = done
        self.peer: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer = transport.get_extra_info("peername")

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.done.done():
            return
        if self.peer is not None and tuple(addr[:2]) != tuple(self.peer[:2]):
            return  # not from the server we asked
        if len(data) < 2 or int.from_bytes(data[:2], "big") != self.txid:
            return  # not an answer to our query (stale, or spoofed)
        self.done.set_result((data, None))

    def error_received(self, exc: Exception) -> None:
        if not self.done.done() and isinstance(exc, OSError):
            self.done.set_result((None, exc))


def _os_error_code(exc: OSError) -> str:
    return "refused" if isinstance(exc, ConnectionRefusedError) else "unreachable"


async def probe_once(
    name: str, *, server: str, port: int = 53, qtype: str = "A", timeout_s: float
) -> ProbeResult:
    """Ask ``server`` for ``name`` once over UDP; never raises for a target failure.

    A name or query type that cannot be encoded is a configuration error and
    raises :class:`DnsError`.
    """
    txid = secrets.randbelow(0x10000)
    query = build_query(name, qtype, txid=txid)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[bytes | None, OSError | None]] = loop.create_future()
    transport: asyncio.DatagramTransport | None = None
    try:
        async with asyncio.timeout(timeout_s):
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Client(txid, done), remote_addr=(server, port)
                )
            except OSError as exc:
                return ProbeResult(ok=False, error=_os_error_code(exc))
            start = time.perf_counter()
            transport.sendto(query)
            data, error = await done
            rtt_ms = (time.perf_counter() - start) * 1000.0
    except TimeoutError:
        return ProbeResult(ok=False, error="timeout")
    finally:
        if transport is not None:
            transport.close()
    if error is not None or data is None:
        return ProbeResult(ok=False, error=_os_error_code(error or OSError()))
    try:
        answer = parse_response(data, txid=txid)
    except DnsError:
        return ProbeResult(ok=False, rtt_ms=rtt_ms, error="dns_bad_response")
    if answer.rcode == 0:
        if not answer.addresses:
            return ProbeResult(ok=False, rtt_ms=rtt_ms, error="dns_no_answer")
        return ProbeResult(
            ok=True,
            rtt_ms=rtt_ms,
            extras={"resolved": answer.addresses[0], "answers": len(answer.addresses)},
        )
    code = _RCODE_ERRORS.get(answer.rcode, "dns_bad_response")
    return ProbeResult(ok=False, rtt_ms=rtt_ms, error=code, extras={"rcode": answer.rcode})
