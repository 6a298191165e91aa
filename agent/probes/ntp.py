"""NTP probe: SNTP (RFC 4330) client codec and one UDP exchange.

The pure part builds a 48-byte client request (LI 0, VN 4, mode 3, transmit
timestamp set) and parses a server reply.  Timestamps are NTP 64-bit fixed
point (32 bits of seconds since 1900-01-01, 32 bits of fraction); the era
(the 2036 wrap) is chosen as the one nearest our own send time.  The offset
and delay are computed exactly on the 64-bit integers,

    offset = ((T2 - T1) + (T3 - T4)) / 2
    delay  = (T4 - T1) - (T3 - T2)

and only then turned into milliseconds.  A reply shorter than 48 bytes, not
in server mode, whose originate timestamp is not our transmit timestamp or
whose transmit timestamp is zero raises :class:`NtpError`; stratum 0 is a
kiss-o'-death and raises :class:`NtpKissOfDeath` (``"kiss-o'-death RATE"``).
Leap indicator 3 (clock unsynchronised) is reported in the sample, not raised.

:func:`probe_once` maps outcomes onto the error codes ``timeout``,
``refused`` (ICMP port unreachable), ``unreachable``, ``ntp_bad_response``,
``ntp_kiss_of_death`` and ``ntp_unsynchronised`` (leap 3 or stratum ≥ 16).

Tested against a small in-process responder and against Debian's chronyd
(tests/agent/probes/test_ntp_chrony.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

from .base import ProbeResult

NTP_EPOCH_OFFSET = 2_208_988_800
"""Seconds from 1900-01-01 (NTP era 0) to 1970-01-01 (the Unix epoch)."""
_FRAC = 1 << 32
_ERA = 1 << 64  # one NTP era in 64-bit fixed-point units
PACKET_SIZE = 48
_MODE_CLIENT = 3
_MODE_SERVER = 4
LEAP_UNSYNCHRONISED = 3


class NtpError(ValueError):
    """An NTP reply is malformed or unusable."""


class NtpKissOfDeath(NtpError):
    """The server sent a kiss-o'-death (stratum 0) with ``code`` (e.g. RATE, DENY)."""

    def __init__(self, code: str) -> None:
        super().__init__(f"kiss-o'-death {code}")
        self.code = code


@dataclass(frozen=True, slots=True)
class NtpSample:
    """One exchange: clock offset (server minus us) and round-trip delay."""

    offset_ms: float
    rtt_ms: float
    stratum: int
    leap: int


def _ntp_units(unix_time: float) -> int:
    """Unix time in NTP fixed-point units since 1900, not wrapped into an era."""
    seconds = math.floor(unix_time)
    fraction = round((unix_time - seconds) * _FRAC)
    return ((seconds + NTP_EPOCH_OFFSET) << 32) + fraction


def to_ntp(unix_time: float) -> int:
    """Unix time as a 64-bit NTP timestamp (wrapped into its era)."""
    return _ntp_units(unix_time) % _ERA


def _unwrap(timestamp: int, pivot: int) -> int:
    """The era-extended value of ``timestamp`` nearest to ``pivot`` (both in NTP units)."""
    return timestamp + round((pivot - timestamp) / _ERA) * _ERA


def from_ntp(timestamp: int, *, pivot: float) -> float:
    """A 64-bit NTP timestamp as Unix time, in the era nearest ``pivot`` (Unix time)."""
    return _unwrap(timestamp, _ntp_units(pivot)) / _FRAC - NTP_EPOCH_OFFSET


def build_request(transmit_time: float) -> bytes:
    """A 48-byte SNTP client request whose transmit timestamp is ``transmit_time``."""
    first = (0 << 6) | (4 << 3) | _MODE_CLIENT
    return bytes([first]) + bytes(39) + to_ntp(transmit_time).to_bytes(8, "big")


def parse_response(data: bytes, *, t1: float, t4: float) -> NtpSample:
    """Parse a server reply to the request sent at ``t1`` and received at ``t4``."""
    if len(data) < PACKET_SIZE:
        raise NtpError(f"reply of {len(data)} bytes is shorter than {PACKET_SIZE}")
    leap = data[0] >> 6
    mode = data[0] & 0x07
    stratum = data[1]
    if mode != _MODE_SERVER:
        raise NtpError(f"reply in mode {mode}, not server mode")
    ours = to_ntp(t1)
    originate = int.from_bytes(data[24:32], "big")
    if originate != ours:
        raise NtpError("originate timestamp is not our transmit timestamp")
    if stratum == 0:
        refid = data[12:16]
        if leap == LEAP_UNSYNCHRONISED and refid == bytes(4):
            stratum = 16  # unsynchronised server without a kiss code
        else:
            code = refid.decode("ascii", errors="replace").rstrip("\x00")
            raise NtpKissOfDeath("".join(c if c.isprintable() else "?" for c in code))
    raw_t2 = int.from_bytes(data[32:40], "big")
    raw_t3 = int.from_bytes(data[40:48], "big")
    if raw_t3 == 0:
        raise NtpError("transmit timestamp is zero")
    n1 = _ntp_units(t1)
    n4 = _ntp_units(t4)
    n2 = _unwrap(raw_t2, n1)
    n3 = _unwrap(raw_t3, n1)
    offset = (n2 - n1) + (n3 - n4)  # twice the offset
    delay = (n4 - n1) - (n3 - n2)
    return NtpSample(
        offset_ms=offset * 1000 / (2 * _FRAC),
        rtt_ms=delay * 1000 / _FRAC,
        stratum=stratum,
        leap=leap,
    )


class _Client(asyncio.DatagramProtocol):
    def __init__(self, done: asyncio.Future[tuple[bytes, float] | OSError]) -> None:
        self.done = done
        self.peer: Any = None
        self.transmit = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer = transport.get_extra_info("peername")

    def datagram_received(self, data: bytes, addr: Any) -> None:
        t4 = time.time()
        if self.done.done():
            return
        if self.peer is not None and tuple(addr[:2]) != tuple(self.peer[:2]):
            return  # not from the server we asked
        if len(data) >= PACKET_SIZE and data[24:32] != self.transmit:
            return  # a bogus reply: not an answer to our request (RFC 5905 discards it)
        self.done.set_result((data, t4))

    def error_received(self, exc: Exception) -> None:
        if not self.done.done() and isinstance(exc, OSError):
            self.done.set_result(exc)


def _os_error_code(exc: OSError) -> str:
    return "refused" if isinstance(exc, ConnectionRefusedError) else "unreachable"


async def probe_once(server: str, *, port: int = 123, timeout_s: float) -> ProbeResult:
    """One SNTP exchange with ``server``; never raises for a target failure."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[bytes, float] | OSError] = loop.create_future()
    client = _Client(done)
    transport: asyncio.DatagramTransport | None = None
    try:
        async with asyncio.timeout(timeout_s):
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: client, remote_addr=(server, port)
                )
            except OSError as exc:
                return ProbeResult(ok=False, error=_os_error_code(exc))
            t1 = time.time()
            request = build_request(t1)
            client.transmit = request[40:48]
            transport.sendto(request)
            outcome = await done
    except TimeoutError:
        return ProbeResult(ok=False, error="timeout")
    finally:
        if transport is not None:
            transport.close()
    if isinstance(outcome, OSError):
        return ProbeResult(ok=False, error=_os_error_code(outcome))
    data, t4 = outcome
    try:
        sample = parse_response(data, t1=t1, t4=t4)
    except NtpKissOfDeath as exc:
        return ProbeResult(ok=False, error="ntp_kiss_of_death", extras={"kiss_code": exc.code})
    except NtpError:
        return ProbeResult(ok=False, error="ntp_bad_response")
    rtt_ms = max(sample.rtt_ms, 0.0)
    extras = {"clock_offset_ms": sample.offset_ms, "stratum": sample.stratum}
    if sample.leap == LEAP_UNSYNCHRONISED or sample.stratum >= 16:
        return ProbeResult(ok=False, rtt_ms=rtt_ms, error="ntp_unsynchronised", extras=extras)
    return ProbeResult(ok=True, rtt_ms=rtt_ms, extras=extras)
