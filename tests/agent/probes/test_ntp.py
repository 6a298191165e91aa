"""The SNTP codec on crafted packets, and the probe against a real UDP responder.

The responder is a small asyncio SNTP server on 127.0.0.1 (port 0) answering
with the real clock.  The tests against Debian's chronyd are in
test_ntp_chrony.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.probes.base import ProbeResult
from agent.probes.ntp import (
    NTP_EPOCH_OFFSET,
    NtpError,
    NtpKissOfDeath,
    NtpSample,
    build_request,
    from_ntp,
    parse_response,
    probe_once,
    to_ntp,
)

T1 = 1_700_000_000.25  # an exact binary fraction: every conversion below is exact


def reply(
    *,
    originate: int,
    receive: int,
    transmit: int,
    leap: int = 0,
    version: int = 4,
    mode: int = 4,
    stratum: int = 2,
    refid: bytes = b"GPS\x00",
) -> bytes:
    first = (leap << 6) | (version << 3) | mode
    return (
        bytes([first, stratum, 6, 0xEC])
        + bytes(8)  # root delay, root dispersion
        + refid
        + transmit.to_bytes(8, "big")  # reference timestamp: anything plausible
        + originate.to_bytes(8, "big")
        + receive.to_bytes(8, "big")
        + transmit.to_bytes(8, "big")
    )


def server_reply(t1: float, t2: float, t3: float, **kw: Any) -> bytes:
    return reply(originate=to_ntp(t1), receive=to_ntp(t2), transmit=to_ntp(t3), **kw)


# --- timestamps -----------------------------------------------------------------------------


def test_to_ntp_is_64_bit_fixed_point_since_1900() -> None:
    assert to_ntp(0.0) == NTP_EPOCH_OFFSET << 32
    assert to_ntp(T1) == ((1_700_000_000 + NTP_EPOCH_OFFSET) << 32) | (1 << 30)
    assert to_ntp(-NTP_EPOCH_OFFSET + 0.5) == 1 << 31  # 1900-01-01 00:00:00.5


def test_era_wrap_in_2036() -> None:
    wrap = float((1 << 32) - NTP_EPOCH_OFFSET)  # 2036-02-07 06:28:16 UTC
    assert to_ntp(wrap) == 0
    assert to_ntp(wrap + 1.5) == (1 << 32) + (1 << 31)
    assert from_ntp(to_ntp(wrap + 1.5), pivot=wrap - 10) == wrap + 1.5
    assert from_ntp(to_ntp(wrap - 1.5), pivot=wrap + 10) == wrap - 1.5
    assert from_ntp(to_ntp(T1), pivot=T1) == T1


def test_build_request_layout() -> None:
    packet = build_request(T1)
    assert len(packet) == 48
    assert packet[0] == 0b00_100_011  # LI 0, VN 4, mode 3
    assert packet[1:40] == bytes(39)
    assert int.from_bytes(packet[40:48], "big") == to_ntp(T1)


# --- offset and delay -----------------------------------------------------------------------


def test_server_ahead_with_symmetric_delay() -> None:
    # server 1.5 s ahead; 10 ms each way; the server turns it round in 1 ms
    t2 = T1 + 0.010 + 1.5
    t3 = t2 + 0.001
    t4 = T1 + 0.021
    sample = parse_response(server_reply(T1, t2, t3), t1=T1, t4=t4)
    # 0.010 and 0.021 are not binary fractions, and a float Unix time near 1.7e9
    # resolves only 2**-22 s (0.24 µs): the inputs, not the arithmetic, limit this to 1 µs
    assert sample.offset_ms == pytest.approx(1500.0, abs=1e-3)
    assert sample.rtt_ms == pytest.approx(20.0, abs=1e-3)
    assert (sample.stratum, sample.leap) == (2, 0)


def test_exact_arithmetic_on_binary_fractions() -> None:
    # server 0.75 s behind; 1/64 s out, 1/32 s back, 1/128 s inside the server
    t2 = T1 + 1 / 64 - 0.75
    t3 = t2 + 1 / 128
    t4 = T1 + 1 / 64 + 1 / 128 + 1 / 32
    sample = parse_response(server_reply(T1, t2, t3), t1=T1, t4=t4)
    # offset = ((1/64 - 3/4) + (-3/4 - 1/32)) / 2 = -3/4 - 1/128: the path asymmetry
    # (1/64 out, 1/32 back) shows up as half its difference
    assert sample.offset_ms == -757.8125
    assert sample.rtt_ms == 46.875  # 1/64 + 1/32


def test_offset_across_the_era_wrap() -> None:
    wrap = float((1 << 32) - NTP_EPOCH_OFFSET)
    t1 = wrap - 0.5  # we are just before the wrap, the server just after it
    t2, t3, t4 = wrap + 0.5, wrap + 0.5, wrap - 0.25
    sample = parse_response(server_reply(t1, t2, t3), t1=t1, t4=t4)
    assert sample.offset_ms == 875.0
    assert sample.rtt_ms == 250.0


# --- checks ---------------------------------------------------------------------------------


def test_rejects_short_reply() -> None:
    with pytest.raises(NtpError, match="shorter"):
        parse_response(server_reply(T1, T1, T1)[:47], t1=T1, t4=T1)


@pytest.mark.parametrize("mode", [0, 1, 2, 3, 5, 6, 7])
def test_rejects_non_server_mode(mode: int) -> None:
    with pytest.raises(NtpError, match="mode"):
        parse_response(server_reply(T1, T1, T1, mode=mode), t1=T1, t4=T1)


def test_rejects_foreign_originate() -> None:
    with pytest.raises(NtpError, match="originate"):
        parse_response(server_reply(T1 + 1, T1, T1), t1=T1, t4=T1)


def test_rejects_zero_transmit() -> None:
    packet = reply(originate=to_ntp(T1), receive=to_ntp(T1), transmit=0)
    with pytest.raises(NtpError, match="transmit"):
        parse_response(packet, t1=T1, t4=T1)


@pytest.mark.parametrize(("refid", "code"), [(b"RATE", "RATE"), (b"DENY", "DENY")])
def test_kiss_of_death(refid: bytes, code: str) -> None:
    packet = server_reply(T1, T1, T1, stratum=0, leap=3, refid=refid)
    with pytest.raises(NtpKissOfDeath, match=f"kiss-o'-death {code}") as info:
        parse_response(packet, t1=T1, t4=T1)
    assert info.value.code == code
    assert isinstance(info.value, NtpError)


def test_unsynchronised_leap_is_reported_not_raised() -> None:
    packet = server_reply(T1, T1, T1, leap=3, stratum=16, refid=b"INIT")
    assert parse_response(packet, t1=T1, t4=T1) == NtpSample(0.0, 0.0, 16, 3)
    # stratum 0 without a kiss code and leap 3: an unsynchronised server, not a kiss
    packet = server_reply(T1, T1, T1, leap=3, stratum=0, refid=bytes(4))
    assert parse_response(packet, t1=T1, t4=T1).leap == 3


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=100), st.booleans())
def test_arbitrary_bytes_raise_only_ntp_error(data: bytes, with_origin: bool) -> None:
    if with_origin and len(data) >= 48:
        data = data[:24] + to_ntp(T1).to_bytes(8, "big") + data[32:]
    with contextlib.suppress(NtpError):
        parse_response(data, t1=T1, t4=T1 + 0.01)


# --- against a real UDP responder -----------------------------------------------------------


@dataclass
class Responder(asyncio.DatagramProtocol):
    """An SNTP server on the real clock; ``behaviour`` picks the kind of answer."""

    behaviour: str = "good"
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        received = to_ntp(time.time())
        originate = int.from_bytes(data[40:48], "big")
        if self.behaviour == "silent":
            return
        kw: dict[str, Any] = {}
        if self.behaviour == "kiss":
            kw = {"stratum": 0, "leap": 3, "refid": b"RATE"}
        elif self.behaviour == "unsynchronised":
            kw = {"stratum": 16, "leap": 3, "refid": b"INIT"}
        elif self.behaviour == "client_mode":
            kw = {"mode": 3}
        if self.behaviour == "stale_first":
            stale = reply(originate=originate ^ 1, receive=received, transmit=received)
            self.transport.sendto(stale, addr)
        if self.behaviour == "short":
            self.transport.sendto(b"\x24" * 20, addr)
            return
        packet = reply(originate=originate, receive=received, transmit=to_ntp(time.time()), **kw)
        self.transport.sendto(packet, addr)


async def serve(behaviour: str) -> tuple[asyncio.DatagramTransport, int]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: Responder(behaviour), local_addr=("127.0.0.1", 0)
    )
    return transport, transport.get_extra_info("sockname")[1]


@contextlib.asynccontextmanager
async def responder(behaviour: str) -> AsyncIterator[int]:
    transport, port = await serve(behaviour)
    try:
        yield port
    finally:
        transport.close()


@pytest.mark.parametrize("behaviour", ["good", "stale_first"])
async def test_probe_against_real_clock(behaviour: str) -> None:
    async with responder(behaviour) as port:
        result = await probe_once("127.0.0.1", port=port, timeout_s=5)
    assert result.ok, result
    assert result.rtt_ms is not None
    offset = result.extras["clock_offset_ms"]
    assert isinstance(offset, float)
    assert -50 <= offset <= 50
    assert result.extras["stratum"] == 2


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("kiss", "ntp_kiss_of_death"),
        ("unsynchronised", "ntp_unsynchronised"),
        ("client_mode", "ntp_bad_response"),
        ("short", "ntp_bad_response"),
    ],
)
async def test_probe_failures(behaviour: str, error: str) -> None:
    async with responder(behaviour) as port:
        result = await probe_once("127.0.0.1", port=port, timeout_s=5)
    assert not result.ok
    assert result.error == error


async def test_probe_times_out_when_never_answered() -> None:
    async with responder("silent") as port:
        result = await probe_once("127.0.0.1", port=port, timeout_s=0.2)
    assert result == ProbeResult(ok=False, error="timeout")


async def test_probe_on_closed_port_is_refused_or_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await probe_once("127.0.0.1", port=port, timeout_s=1)
    assert not result.ok
    assert result.error in {"refused", "timeout"}
