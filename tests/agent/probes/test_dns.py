"""The DNS codec on crafted packets, and the probe against a real UDP responder.

The responder is a small asyncio DNS server on 127.0.0.1 (port 0) answering
from a dict.  The tests against Debian's dnsmasq are in test_dns_dnsmasq.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.probes.dns import (
    DnsAnswer,
    DnsError,
    build_query,
    parse_response,
    probe_once,
    system_resolver,
)

TXID = 0x1234


def header(txid: int = TXID, *, flags: int = 0x8180, qd: int = 1, an: int = 0) -> bytes:
    return struct.pack("!HHHHHH", txid, flags, qd, an, 0, 0)


def qname(name: str) -> bytes:
    out = b""
    for label in name.split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def question(name: str, qtype: int = 1) -> bytes:
    return qname(name) + struct.pack("!HH", qtype, 1)


def rr(name: bytes, rtype: int, rdata: bytes, rclass: int = 1) -> bytes:
    return name + struct.pack("!HHIH", rtype, rclass, 300, len(rdata)) + rdata


POINTER_TO_QNAME = b"\xc0\x0c"  # offset 12: the question name right after the header


def a_response(txid: int = TXID) -> bytes:
    """www.example.com: a CNAME to web.example.com (compressed), then two A records."""
    q = question("www.example.com")
    # the CNAME target "web" + pointer to "example.com" inside the question (offset 16)
    cname_target = b"\x03web\xc0\x10"
    cname = rr(POINTER_TO_QNAME, 5, cname_target)
    cname_offset = 12 + len(q) + 2 + 10  # where cname_target starts
    target_ptr = struct.pack("!H", 0xC000 | cname_offset)
    answers = (
        cname
        + rr(target_ptr, 1, bytes([192, 0, 2, 10]))
        + rr(target_ptr, 1, bytes([192, 0, 2, 11]))
    )
    return header(txid, an=3) + q + answers


# --- build_query ----------------------------------------------------------------------------


def test_build_query_is_a_standard_recursive_query() -> None:
    packet = build_query("www.example.com", txid=0xBEEF)
    assert packet == struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0) + question(
        "www.example.com"
    )


def test_build_query_aaaa_and_trailing_dot() -> None:
    packet = build_query("example.com.", "AAAA", txid=1)
    assert packet[12:] == question("example.com", 28)


@pytest.mark.parametrize(
    ("name", "qtype", "txid"),
    [
        ("a..b", "A", 1),
        ("x" * 64 + ".com", "A", 1),
        (".".join(["abcdefghi"] * 30), "A", 1),
        ("example.com", "MX", 1),
        ("example.com", "A", 0x10000),
        ("example.com", "A", -1),
    ],
)
def test_build_query_rejects_what_it_cannot_encode(name: str, qtype: str, txid: int) -> None:
    with pytest.raises(DnsError):
        build_query(name, qtype, txid=txid)


# --- parse_response -------------------------------------------------------------------------


def test_parse_follows_compression_pointers() -> None:
    answer = parse_response(a_response(), txid=TXID)
    assert answer == DnsAnswer(rcode=0, addresses=("192.0.2.10", "192.0.2.11"))


def test_parse_aaaa() -> None:
    q = question("example.com", 28)
    addr = bytes.fromhex("20010db8000000000000000000000001")
    packet = header(an=1) + q + rr(POINTER_TO_QNAME, 28, addr)
    assert parse_response(packet, txid=TXID).addresses == ("2001:db8::1",)


def test_parse_ignores_other_classes_and_walks_authority_and_additional() -> None:
    q = question("example.com")
    packet = (
        struct.pack("!HHHHHH", TXID, 0x8180, 1, 2, 1, 1)
        + q
        + rr(POINTER_TO_QNAME, 1, b"\x01\x02\x03\x04", rclass=3)  # CHAOS: not an address
        + rr(POINTER_TO_QNAME, 1, b"\x05\x06\x07\x08")
        + rr(POINTER_TO_QNAME, 1, b"\x09\x09\x09\x09")  # authority: not an answer
        + rr(b"\x00", 41, b"")  # OPT pseudo-record in the additional section
    )
    assert parse_response(packet, txid=TXID).addresses == ("5.6.7.8",)


@pytest.mark.parametrize(("rcode", "name"), [(3, "nxdomain"), (2, "servfail"), (5, "refused")])
def test_parse_reports_rcode(rcode: int, name: str) -> None:
    packet = header(flags=0x8180 | rcode) + question("nope.example")
    assert parse_response(packet, txid=TXID) == DnsAnswer(rcode=rcode, addresses=())


def test_parse_rejects_wrong_txid_and_queries() -> None:
    with pytest.raises(DnsError, match="transaction id"):
        parse_response(a_response(txid=7), txid=TXID)
    with pytest.raises(DnsError, match="query"):
        parse_response(build_query("example.com", txid=TXID), txid=TXID)


def test_parse_rejects_pointer_loop() -> None:
    # the answer's name is a pointer to itself
    q = question("example.com")
    loop_at = 12 + len(q)
    self_ptr = struct.pack("!H", 0xC000 | loop_at)
    with pytest.raises(DnsError, match="loop"):
        parse_response(header(an=1) + q + rr(self_ptr, 1, b"\x01\x02\x03\x04"), txid=TXID)


def test_parse_rejects_two_pointer_cycle() -> None:
    # question name: label "a" then pointer to offset 17, which points back to 12
    body = b"\x01a\xc0\x11" + b"\x00" + b"\xc0\x0c"
    packet = header(qd=1) + body
    with pytest.raises(DnsError, match="loop"):
        parse_response(packet, txid=TXID)


def test_parse_rejects_bad_rdata_length() -> None:
    packet = header(an=1) + question("example.com") + rr(POINTER_TO_QNAME, 1, b"\x01\x02\x03")
    with pytest.raises(DnsError, match="A record"):
        parse_response(packet, txid=TXID)


def test_parse_rejects_extended_label_types() -> None:
    packet = header() + b"\x41abc\x00" + struct.pack("!HH", 1, 1)
    with pytest.raises(DnsError, match="label type"):
        parse_response(packet, txid=TXID)


def test_parse_rejects_overlong_names() -> None:
    name = b"\x3f" + b"a" * 63
    packet = header() + name * 5 + b"\x00" + struct.pack("!HH", 1, 1)
    with pytest.raises(DnsError, match="255"):
        parse_response(packet, txid=TXID)


def test_truncation_at_every_byte_is_a_dns_error() -> None:
    full = a_response()
    parse_response(full, txid=TXID)
    for cut in range(len(full)):
        with pytest.raises(DnsError):
            parse_response(full[:cut], txid=TXID)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_dns_error(data: bytes) -> None:
    for packet in (data, struct.pack("!H", TXID) + data):
        with contextlib.suppress(DnsError):
            parse_response(packet, txid=TXID)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_mutated_responses_raise_only_dns_error(data: st.DataObject) -> None:
    packet = bytearray(a_response())
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(packet) - 1))
        packet[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DnsError):
        parse_response(bytes(packet), txid=TXID)


# --- system_resolver ------------------------------------------------------------------------


def test_system_resolver_reads_first_nameserver(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# generated\nsearch example.com\n; nameserver 10.9.9.9\n"
        "nameserver 192.0.2.53 # primary\nnameserver 192.0.2.54\n"
    )
    assert system_resolver(str(conf)) == "192.0.2.53"


def test_system_resolver_without_nameserver(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("search example.com\n")
    assert system_resolver(str(conf)) is None
    assert system_resolver(str(tmp_path / "missing")) is None


# --- against a real UDP responder -----------------------------------------------------------


@dataclass
class Responder(asyncio.DatagramProtocol):
    """Answers queries from ``zone``: a list of IPv4 addresses, or an int rcode.

    Names in ``wrong_txid_first`` first get a reply with another transaction
    id; names in ``spoof_first`` first get a reply (right id, wrong address)
    from a second socket.  Names in ``silent`` are never answered.
    """

    zone: dict[str, list[str] | int]
    wrong_txid_first: set[str] = field(default_factory=set)
    spoof_first: set[str] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)
    garbage: set[str] = field(default_factory=set)
    transport: asyncio.DatagramTransport | None = None
    queries: int = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        self.queries += 1
        txid, _flags, _qd = struct.unpack_from("!HHH", data)
        labels, pos = [], 12
        while data[pos]:
            labels.append(data[pos + 1 : pos + 1 + data[pos]].decode())
            pos += 1 + data[pos]
        name = ".".join(labels)
        q = data[12 : pos + 5]
        if name in self.silent:
            return
        if name in self.garbage:
            self.transport.sendto(struct.pack("!H", txid) + b"\xff" * 5, addr)
            return
        entry = self.zone.get(name, 3)
        if isinstance(entry, int):
            reply = header(txid, flags=0x8180 | entry) + q
        else:
            records = b"".join(rr(POINTER_TO_QNAME, 1, socket.inet_aton(a)) for a in entry)
            reply = header(txid, an=len(entry)) + q + records
        if name in self.wrong_txid_first:
            bogus = header(txid ^ 0xFFFF, an=1) + q + rr(POINTER_TO_QNAME, 1, b"\x06\x06\x06\x06")
            self.transport.sendto(bogus, addr)
        if name in self.spoof_first:
            bogus = header(txid, an=1) + q + rr(POINTER_TO_QNAME, 1, b"\x06\x06\x06\x06")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                other.bind(("127.0.0.1", 0))
                other.sendto(bogus, addr)
        self.transport.sendto(reply, addr)


ZONE: dict[str, list[str] | int] = {
    "www.example.test": ["192.0.2.80", "192.0.2.81"],
    "fail.example.test": 2,
    "refuse.example.test": 5,
    "empty.example.test": 0,
    "twice.example.test": ["192.0.2.7"],
    "spoofed.example.test": ["192.0.2.8"],
}


@pytest.fixture
async def responder() -> AsyncIterator[tuple[Responder, int]]:
    loop = asyncio.get_running_loop()
    proto = Responder(
        ZONE,
        wrong_txid_first={"twice.example.test"},
        spoof_first={"spoofed.example.test"},
        silent={"silent.example.test"},
        garbage={"garbage.example.test"},
    )
    transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        yield proto, port
    finally:
        transport.close()


async def test_probe_resolves_a_record(responder: tuple[Responder, int]) -> None:
    _, port = responder
    result = await probe_once("www.example.test", server="127.0.0.1", port=port, timeout_s=5)
    assert result.ok
    assert result.error is None
    assert result.rtt_ms is not None
    assert dict(result.extras) == {"resolved": "192.0.2.80", "answers": 2}


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("missing.example.test", "nxdomain"),
        ("fail.example.test", "servfail"),
        ("refuse.example.test", "dns_refused"),
        ("empty.example.test", "dns_no_answer"),
        ("garbage.example.test", "dns_bad_response"),
    ],
)
async def test_probe_failures(responder: tuple[Responder, int], name: str, error: str) -> None:
    _, port = responder
    result = await probe_once(name, server="127.0.0.1", port=port, timeout_s=5)
    assert not result.ok
    assert result.error == error


async def test_probe_ignores_reply_with_wrong_txid(responder: tuple[Responder, int]) -> None:
    _, port = responder
    result = await probe_once("twice.example.test", server="127.0.0.1", port=port, timeout_s=5)
    assert result.ok
    assert result.extras["resolved"] == "192.0.2.7"


async def test_probe_ignores_reply_from_another_address(
    responder: tuple[Responder, int],
) -> None:
    _, port = responder
    result = await probe_once("spoofed.example.test", server="127.0.0.1", port=port, timeout_s=5)
    assert result.ok
    assert result.extras["resolved"] == "192.0.2.8"


async def test_probe_times_out_when_never_answered(responder: tuple[Responder, int]) -> None:
    proto, port = responder
    result = await probe_once("silent.example.test", server="127.0.0.1", port=port, timeout_s=0.2)
    assert result == type(result)(ok=False, error="timeout")
    assert proto.queries == 1


async def test_probe_on_closed_port_is_refused_or_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await probe_once("www.example.test", server="127.0.0.1", port=port, timeout_s=1)
    assert not result.ok
    assert result.error in {"refused", "timeout"}


async def test_probe_to_silent_socket_times_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        result = await probe_once("www.example.test", server="127.0.0.1", port=port, timeout_s=0.2)
    assert result.error == "timeout"
    assert not result.ok
