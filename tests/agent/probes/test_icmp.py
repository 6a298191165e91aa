"""The ICMP echo codec on crafted packets, and the probe for real.

The probe runs against 127.0.0.1 and ::1 in this process, and inside a
namespace pair (see ``netns.py``) whose target namespace is a router: behind
it a blackhole route (→ ``timeout``), a prefix an nftables rule rejects
(→ host unreachable) and a prefix the source sends to with TTL 1 (→ time
exceeded).
There the probe runs in a subprocess, with a raw socket as root, with a
datagram socket once CAP_NET_RAW is dropped and the namespace's
``net.ipv4.ping_group_range`` allows it, and not at all when it does not.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.probes import icmp
from agent.probes.base import ProbeUnavailable
from agent.probes.icmp import (
    DEST6_UNREACH,
    DEST_UNREACH,
    TIME6_EXCEEDED,
    TIME_EXCEEDED,
    Echo,
    IcmpError,
    Message,
    build_echo,
    checksum,
    outcome,
    parse,
    queued_error,
)

from .netns import NO_NET_RAW, NetnsPair, netns_pair, require_tools

SENT = Echo(0x1234, 7, b"posmon-echo-payload-0123456789ab")
echoes = st.builds(
    Echo,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=300),
)


def ipv4_header(payload_len: int, *, proto: int = socket.IPPROTO_ICMP, ihl: int = 5) -> bytes:
    options = b"\x01" * (ihl * 4 - 20)  # NOP options
    total = ihl * 4 + payload_len
    return (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | ihl,
            0,
            total,
            1,
            0,
            64,
            proto,
            0,
            b"\xc6\x12\0\2",
            b"\xc6\x12\0\1",
        )
        + options
    )


def ipv6_header(payload_len: int, *, next_header: int = socket.IPPROTO_ICMPV6) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, payload_len, next_header, 64, bytes(16), bytes(16))


def icmp_error(kind: int, quote: bytes, *, v6: bool = False) -> bytes:
    """An ICMP error message of type ``kind`` quoting ``quote``, with its checksum."""
    bare = struct.pack("!BBHI", kind, 1, 0, 0) + quote
    if v6:
        return bare
    return bare[:2] + checksum(bare).to_bytes(2, "big") + bare[4:]


def quote_of(echo: Echo, *, v6: bool = False, keep: int = 8) -> bytes:
    """What a router quotes of our request: its IP header and ``keep`` bytes of ICMP."""
    request = build_echo(echo, v6=v6)
    header = ipv6_header(len(request)) if v6 else ipv4_header(len(request))
    return header + request[:keep]


# --- checksum ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (bytes.fromhex("0001f203f4f5f6f7"), 0x220D),  # RFC 1071 §3's numerical example
        (b"", 0xFFFF),
        (b"\x00\x00", 0xFFFF),
        (b"\xff\xff\xff\xff", 0x0000),  # end-around carry folds back to 0xffff
        (b"\x01", 0xFEFF),  # an odd byte is padded with a zero on the right
        (bytes.fromhex("0800000000010001"), 0xF7FD),  # echo request id 1 seq 1, no data
    ],
)
def test_checksum_known_vectors(data: bytes, expected: int) -> None:
    assert checksum(data) == expected


@given(st.binary(max_size=200))
def test_checksum_of_a_checksummed_packet_is_zero(data: bytes) -> None:
    data = data + b"\x00" if len(data) % 2 else data  # the sum sits on a 16-bit boundary
    packet = data + checksum(data).to_bytes(2, "big")
    assert checksum(packet) == 0


# --- build and parse --------------------------------------------------------


def test_build_echo_request() -> None:
    packet = build_echo(Echo(1, 1))
    assert packet == bytes.fromhex("0800f7fd00010001")
    v6 = build_echo(Echo(1, 2, b"ab"), v6=True)
    assert v6 == bytes.fromhex("80000000000100026162")  # checksum left to the kernel


@given(echoes, st.booleans())
def test_round_trip_reply(echo: Echo, v6: bool) -> None:
    message = parse(build_echo(echo, v6=v6, reply=True), v6=v6)
    assert message == Message(129 if v6 else 0, 0, echo)
    assert outcome(message, echo, v6=v6) == "ok"


@given(echoes)
def test_round_trip_reply_with_ip_header(echo: Echo) -> None:
    reply = build_echo(echo, reply=True)
    assert parse(ipv4_header(len(reply)) + reply, ip_header=True) == Message(0, 0, echo)


def test_ip_header_options_are_skipped() -> None:
    reply = build_echo(SENT, reply=True)
    assert parse(ipv4_header(len(reply), ihl=7) + reply, ip_header=True).echo == SENT


def test_whole_short_and_trailing_with_ip_header() -> None:
    reply = build_echo(SENT, reply=True)
    whole = ipv4_header(len(reply)) + reply
    assert parse(whole, ip_header=True).echo == SENT
    with pytest.raises(IcmpError, match="total length"):
        parse(whole[:-1], ip_header=True)
    # bytes past the IP total length (link padding) are not part of the message
    assert parse(whole + b"\xaa\xbb", ip_header=True).echo == SENT


def test_whole_short_and_trailing_without_ip_header() -> None:
    reply = build_echo(SENT, reply=True)  # ends in a non-zero byte
    assert parse(reply).echo == SENT
    with pytest.raises(IcmpError, match="checksum"):
        parse(reply[:-1])
    with pytest.raises(IcmpError, match="checksum"):
        parse(reply + b"\xaa")
    with pytest.raises(IcmpError, match="shorter than an ICMP header"):
        parse(reply[:7])


@pytest.mark.parametrize("ip_header", [False, True])
def test_every_prefix_parses_or_raises_ours(ip_header: bool) -> None:
    reply = build_echo(SENT, reply=True)
    whole = ipv4_header(len(reply)) + reply if ip_header else reply
    for end in range(len(whole)):
        with pytest.raises(IcmpError):
            parse(whole[:end], ip_header=ip_header)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (ipv4_header(8, proto=17) + bytes(8), "not ICMP"),
        (b"\x60" + bytes(27), "not an IPv4 header"),
        (b"\x44" + bytes(27), "not an IPv4 header"),  # IHL 4: shorter than 20 bytes
        (bytes(19), "shorter than an IPv4 header"),
    ],
)
def test_bad_ip_headers(data: bytes, message: str) -> None:
    with pytest.raises(IcmpError, match=message):
        parse(data, ip_header=True)


def test_ipv6_sockets_have_no_ip_header() -> None:
    with pytest.raises(ValueError, match="IPv6"):
        parse(build_echo(SENT, v6=True), v6=True, ip_header=True)


def test_echo_fields_are_16_bit() -> None:
    with pytest.raises(ValueError, match="16-bit"):
        Echo(0x10000, 0)
    with pytest.raises(ValueError, match="16-bit"):
        Echo(0, -1)


# --- what a message means for our echo ---------------------------------------


def test_outcome_of_replies() -> None:
    def reply(echo: Echo) -> Message:
        return parse(build_echo(echo, reply=True))

    assert outcome(reply(SENT), SENT) == "ok"
    assert outcome(reply(Echo(SENT.ident, SENT.seq + 1, SENT.payload)), SENT) == ""
    other_ident = reply(Echo(SENT.ident + 1, SENT.seq, SENT.payload))
    assert outcome(other_ident, SENT) == ""
    assert outcome(other_ident, SENT, match_ident=False) == "ok"  # datagram sockets
    assert outcome(reply(Echo(SENT.ident, SENT.seq, b"another payload")), SENT) == ""
    # a raw socket on loopback also sees our own request: it is not an answer
    assert outcome(parse(build_echo(SENT)), SENT) == ""


@pytest.mark.parametrize(
    ("kind", "v6", "expected"),
    [
        (DEST_UNREACH, False, "unreachable"),
        (TIME_EXCEEDED, False, "ttl_exceeded"),
        (DEST6_UNREACH, True, "unreachable"),
        (TIME6_EXCEEDED, True, "ttl_exceeded"),
    ],
)
@pytest.mark.parametrize("keep", [8, 20, 200])  # RFC 792 promises 8 bytes; Linux quotes all
def test_outcome_of_errors_quoting_our_echo(kind: int, v6: bool, expected: str, keep: int) -> None:
    message = parse(icmp_error(kind, quote_of(SENT, v6=v6, keep=keep), v6=v6), v6=v6)
    assert message.type == kind
    assert message.echo is not None and message.echo.seq == SENT.seq
    assert outcome(message, SENT, v6=v6) == expected
    other = Echo(SENT.ident, SENT.seq ^ 1, SENT.payload)
    assert outcome(message, other, v6=v6) == ""


@pytest.mark.parametrize(
    "quote",
    [
        ipv4_header(16, proto=17) + bytes(8),  # about a UDP datagram
        ipv4_header(8) + struct.pack("!BBHHH", 0, 0, 0, SENT.ident, SENT.seq),  # a reply
        ipv4_header(8)[:20] + b"\x08\x00",  # cut short of the ICMP header
        b"",
        bytes(40),
    ],
)
def test_errors_about_something_else(quote: bytes) -> None:
    message = parse(icmp_error(DEST_UNREACH, quote))
    assert message == Message(DEST_UNREACH, 1, None)
    assert outcome(message, SENT) == ""


def test_other_types_are_not_answers() -> None:
    message = parse(icmp_error(5, quote_of(SENT)))  # a redirect quoting our echo
    assert message == Message(5, 1, None)
    assert outcome(message, SENT) == ""


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("ip_header", [False, True])
@given(data=st.binary(max_size=200))
def test_garbage_parses_or_raises_ours(data: bytes, v6: bool, ip_header: bool) -> None:
    if v6 and ip_header:
        return
    try:
        message = parse(data, v6=v6, ip_header=ip_header)
    except IcmpError:
        return
    assert outcome(message, SENT, v6=v6) in ("", "ok", "unreachable", "ttl_exceeded")


@given(
    kind=st.sampled_from([0, 3, 5, 8, 11]),
    quote=st.one_of(
        st.binary(max_size=100),
        st.builds(lambda tail: ipv4_header(8) + tail, st.binary(max_size=40)),
    ),
)
def test_checksummed_garbage_quotes_parse_or_raise_ours(kind: int, quote: bytes) -> None:
    """Garbage that passes the checksum reaches the quote parser."""
    try:
        message = parse(icmp_error(kind, quote))
    except IcmpError:
        return
    assert outcome(message, SENT) in ("", "ok", "unreachable", "ttl_exceeded")


# --- the error queue of datagram sockets -------------------------------------


def extended_err(origin: int, kind: int, offender: bytes = b"") -> bytes:
    return struct.pack("=IBBBBII", 113, origin, kind, 1, 0, 0, 0) + offender


def test_queued_errors() -> None:
    sin = struct.pack("=H", socket.AF_INET) + b"\0\0" + socket.inet_aton("198.18.0.2") + bytes(8)
    assert queued_error(extended_err(2, TIME_EXCEEDED, sin)) == ("ttl_exceeded", "198.18.0.2")
    assert queued_error(extended_err(2, DEST_UNREACH, sin)) == ("unreachable", "198.18.0.2")
    assert queued_error(extended_err(2, DEST_UNREACH)) == ("unreachable", None)
    assert queued_error(extended_err(1, 0, sin)) == ("unreachable", None)  # raised locally
    assert queued_error(b"\x00") == ("unreachable", None)
    sin6 = (
        struct.pack("=H", socket.AF_INET6)
        + bytes(6)
        + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
        + bytes(4)
    )
    assert queued_error(extended_err(3, TIME6_EXCEEDED, sin6), v6=True) == (
        "ttl_exceeded",
        "2001:db8::1",
    )
    assert queued_error(extended_err(2, TIME_EXCEEDED, sin), v6=True) == ("unreachable", None)


@given(st.binary(max_size=64), st.booleans())
def test_queued_error_never_raises(data: bytes, v6: bool) -> None:
    code, _offender = queued_error(data, v6=v6)
    assert code in ("unreachable", "ttl_exceeded")


# --- the probe on this host ----------------------------------------------------


@pytest.fixture
def socket_kind() -> str:
    try:
        return icmp.icmp_socket_kind()
    except ProbeUnavailable as exc:
        pytest.skip(str(exc))


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_probe_loopback(socket_kind: str) -> None:
    assert socket_kind in ("raw", "dgram")
    result = await icmp.probe_once("127.0.0.1", timeout_s=5)
    assert result.ok, result
    assert result.rtt_ms is not None and result.rtt_ms > 0
    assert result.extras == {"resolved": "127.0.0.1"}


async def test_probe_ipv6_loopback(socket_kind: str) -> None:
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this host")
    result = await icmp.probe_once("::1", timeout_s=5, payload_size=0)
    assert result.ok, result
    assert result.extras == {"resolved": "::1"}


async def test_concurrent_probes_take_only_their_own_replies(socket_kind: str) -> None:
    hosts = ["127.0.0.1", "localhost"] * 10
    results = await asyncio.gather(
        *(icmp.probe_once(h, timeout_s=5, payload_size=8 + i) for i, h in enumerate(hosts))
    )
    assert all(r.ok for r in results), results


async def test_name_that_does_not_resolve(socket_kind: str) -> None:
    result = await icmp.probe_once("no-such-host.invalid", timeout_s=5)
    assert (result.ok, result.error) == (False, "dns")


async def test_payload_size_is_checked() -> None:
    with pytest.raises(ValueError, match="payload_size"):
        await icmp.probe_once("127.0.0.1", timeout_s=1, payload_size=70000)


# --- the probe in a namespace pair ----------------------------------------------

BLACKHOLE, UNREACHABLE, TTL_ONE = "198.18.1.1", "198.18.2.1", "198.18.3.1"
ALL_GROUPS, NO_GROUP = "0 2147483647", "1 0"


@pytest.fixture(scope="module")
def router() -> Iterator[NetnsPair]:
    """A pair whose target namespace routes three prefixes for the source."""
    require_tools("nft")
    with netns_pair() as pair:
        r = pair.target
        pair.sysctl(r, "net.ipv4.ip_forward", "1")
        pair.sysctl(r, "net.ipv4.icmp_ratelimit", "0")  # no limit on nft's or TTL's ICMP
        pair.ip(r, "route", "add", "blackhole", "198.18.1.0/24")
        # Both back towards the source, and never forwarded: one is rejected by
        # nftables, the other has TTL 1.  (Not an `unreachable` route: the
        # kernel rate-limits those answers per source, ~1 a second.)
        pair.ip(r, "route", "add", "198.18.2.0/24", "via", pair.source_ip)
        pair.ip(r, "route", "add", "198.18.3.0/24", "via", pair.source_ip)
        pair.nft(
            r,
            """
            table ip posmon_reject {
                chain forward {
                    type filter hook forward priority 0; policy accept;
                    ip daddr 198.18.2.0/24 reject with icmp type host-unreachable
                }
            }
            """,
        )
        pair.nft(
            pair.source,
            f"""
            table ip posmon_ttl {{
                chain out {{
                    type filter hook output priority 0; policy accept;
                    ip daddr {TTL_ONE} ip ttl set 1
                }}
            }}
            """,
        )
        yield pair


async def probe_all(hosts: list[str], timeout_s: float) -> dict[str, Any]:
    """Run in the source namespace: the socket kind, then every host probed at once."""
    try:
        kind = icmp.icmp_socket_kind()
    except ProbeUnavailable as exc:
        try:
            await icmp.probe_once(hosts[0], timeout_s=timeout_s)
        except ProbeUnavailable as again:
            return {"unavailable": str(exc), "probe_raised": str(again)}
        return {"unavailable": str(exc), "probe_raised": None}
    results = await asyncio.gather(*(icmp.probe_once(h, timeout_s=timeout_s) for h in hosts))
    return {
        "kind": kind,
        "results": [[r.ok, r.error, r.rtt_ms, dict(r.extras)] for r in results],
    }


@pytest.mark.parametrize("kind", ["raw", "dgram"])
def test_probe_outcomes_through_a_router(router: NetnsPair, kind: str) -> None:
    """Ten answering and ten lost targets at once: no probe takes another's reply.

    The namespace's own loopback answers too, over IPv4 and (if this host has
    it) IPv6, so both families run with both kinds of socket.
    """
    router.sysctl(
        router.source, "net.ipv4.ping_group_range", ALL_GROUPS if kind == "dgram" else NO_GROUP
    )
    hosts = [router.target_ip, BLACKHOLE] * 10 + [UNREACHABLE, TTL_ONE] * 2 + ["127.0.0.1"]
    loopbacks = {"127.0.0.1": {(True, None)}}
    if has_ipv6_loopback():
        hosts.append("::1")
        loopbacks["::1"] = {(True, None)}
    prefix = NO_NET_RAW if kind == "dgram" else ()
    out = router.call(router.source, probe_all, prefix=prefix, hosts=hosts, timeout_s=1.0)
    assert out["kind"] == kind
    outcomes: dict[str, set[tuple[bool, str | None]]] = {}
    for host, (ok, error, _rtt, _extras) in zip(hosts, out["results"], strict=True):
        outcomes.setdefault(host, set()).add((ok, error))
    assert outcomes == {
        router.target_ip: {(True, None)},
        BLACKHOLE: {(False, "timeout")},
        UNREACHABLE: {(False, "unreachable")},
        TTL_ONE: {(False, "ttl_exceeded")},
        **loopbacks,
    }
    for (ok, error, rtt, extras), host in zip(out["results"], hosts, strict=True):
        assert extras["resolved"] == host
        if error in ("unreachable", "ttl_exceeded"):
            assert extras["reported_by"] == router.target_ip
            assert rtt is not None and rtt > 0
        elif ok:
            assert rtt > 0


def test_unavailable_without_raw_or_datagram_sockets(router: NetnsPair) -> None:
    router.sysctl(router.source, "net.ipv4.ping_group_range", NO_GROUP)
    out = router.call(
        router.source, probe_all, prefix=NO_NET_RAW, hosts=[router.target_ip], timeout_s=1.0
    )
    reason = out["unavailable"]
    assert "CAP_NET_RAW" in reason
    assert "net.ipv4.ping_group_range to include gid 0" in reason
    assert "it is '1 0'" in reason
    assert out["probe_raised"] == reason
