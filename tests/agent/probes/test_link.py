"""The routing-table parsers on crafted text, the link probe on crafted sysfs
trees, and the probe for real inside network namespaces.

The real tests (root and iproute2 needed, else skipped) create two network
namespaces with a veth pair between them, named uniquely per run and always
deleted.  The probe runs in a small driver process started with ``ip netns
exec`` (which also mounts that namespace's own /sys), so it reads the real
/proc/net/route and /sys/class/net of the namespace.  The peer end has a
smaller MTU than ours, so datagrams too big for it are dropped by the veth
driver and counted in our ``tx_dropped``: an exact counter delta.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.probes.base import ProbeResult, ProbeUnavailable
from agent.probes.link import (
    RTF_GATEWAY,
    RTF_REJECT,
    RTF_UP,
    LinkProbe,
    Route,
    RouteFormatError,
    default_gateway,
    default_route,
    parse_ipv6_route_table,
    parse_route_table,
    pick_default,
)
from tests.helpers import ROOT

ROUTE_HEADER = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"
    "                                                       \n"
)


def hex4(address: str) -> str:
    """An IPv4 address as /proc/net/route prints it (a host-order 32-bit number)."""
    return f"{int.from_bytes(ipaddress.IPv4Address(address).packed, sys.byteorder):08X}"


def route_line(
    iface: str, dest: str, gateway: str, flags: int, metric: int = 0, mask: str = "0.0.0.0"
) -> str:
    return (
        f"{iface}\t{hex4(dest)}\t{hex4(gateway)}\t{flags:04X}\t0\t0\t{metric}\t{hex4(mask)}"
        "\t0\t0\t0\n"
    )


def v6_line(
    iface: str, dest: str, prefix: int, gateway: str, flags: int, metric: int = 1024
) -> str:
    return (
        f"{ipaddress.IPv6Address(dest).packed.hex()} {prefix:02x} {'0' * 32} 00 "
        f"{ipaddress.IPv6Address(gateway).packed.hex()} {metric:08x} 00000001 00000000 "
        f"{flags:08x} {iface:>8}\n"
    )


UG = RTF_UP | RTF_GATEWAY

# verbatim from a Debian 12 container (x86-64, so little-endian)
REAL_ROUTE = (
    ROUTE_HEADER + "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0"
    "                                                                               \n"
    "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0"
    "                                                                               \n"
)
REAL_IPV6_ROUTE = """\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 \
00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 \
00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
"""

little_endian_only = pytest.mark.skipif(
    sys.byteorder != "little", reason="the verbatim sample was recorded on a little-endian host"
)


# --- the IPv4 table -------------------------------------------------------------------------


@little_endian_only
def test_parse_a_verbatim_ipv4_table() -> None:
    assert parse_route_table(REAL_ROUTE) == [
        Route("eth0", "0.0.0.0", 0, "192.0.2.1", 0, UG),
        Route("eth0", "192.0.2.0", 24, None, 0, RTF_UP),
    ]


def test_default_route_has_the_lowest_metric() -> None:
    text = (
        ROUTE_HEADER
        + route_line("wlan0", "0.0.0.0", "10.0.0.1", UG, metric=600)
        + route_line("eth0", "10.1.0.0", "0.0.0.0", RTF_UP, metric=100, mask="255.255.0.0")
        + route_line("eth0", "0.0.0.0", "10.1.0.1", UG, metric=100)
        + route_line("usb0", "0.0.0.0", "10.2.0.1", UG, metric=100)  # a tie: first one wins
    )
    routes = parse_route_table(text)
    assert routes[1] == Route("eth0", "10.1.0.0", 16, None, 100, RTF_UP)
    assert pick_default(routes) == Route("eth0", "0.0.0.0", 0, "10.1.0.1", 100, UG)
    assert pick_default(routes, "wlan0") == routes[0]
    assert pick_default(routes, "lo") is None


@pytest.mark.parametrize(
    "line",
    [
        route_line("tun0", "0.0.0.0", "0.0.0.0", RTF_UP),  # default without a gateway
        route_line("eth0", "0.0.0.0", "10.0.0.1", RTF_GATEWAY),  # not up
        route_line("eth0", "0.0.0.0", "10.0.0.1", UG | RTF_REJECT),  # unreachable
        route_line("eth0", "10.0.0.0", "10.0.0.1", UG, mask="255.0.0.0"),  # not 0/0
        route_line("eth0", "0.0.0.0", "10.0.0.1", UG, mask="128.0.0.0"),  # 0/1
    ],
)
def test_what_is_not_a_default_route(line: str) -> None:
    assert pick_default(parse_route_table(ROUTE_HEADER + line)) is None


def test_no_routes_at_all() -> None:
    assert parse_route_table(ROUTE_HEADER) == []
    assert parse_route_table("") == []


@pytest.mark.parametrize(
    "bad",
    [
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\n",  # too few fields
        "eth0\t0000000G\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00FF00FF\t0\t0\t0\n",  # holes in the mask
        "eth0\t00000000\t010200C0\t0003\t0\t0\t-1\t00000000\t0\t0\t0\n",
        "eth0\t0000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
        "eth0\t0x000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
    ],
)
def test_malformed_ipv4_lines(bad: str) -> None:
    with pytest.raises(RouteFormatError):
        parse_route_table(ROUTE_HEADER + bad)


# --- the IPv6 table -------------------------------------------------------------------------


def test_parse_a_verbatim_ipv6_table() -> None:
    routes = parse_ipv6_route_table(REAL_IPV6_ROUTE)
    assert routes[0] == Route("eth0", "fd00::", 64, None, 256, RTF_UP)
    assert routes[1] == Route("eth0", "::", 0, "fd00::1", 1024, UG)
    assert routes[2].destination == "::1"
    assert routes[2].prefix_len == 128
    # the "unreachable default" every namespace has on lo is not a default route
    assert routes[3] == Route("lo", "::", 0, None, 0xFFFFFFFF, 0x00200200)
    assert pick_default(routes) == routes[1]


def test_ipv6_lowest_metric_and_link_local_gateway() -> None:
    ra = UG | 0x00450000  # RTF_DEFAULT | RTF_ADDRCONF | RTF_EXPIRES: learnt from an RA
    text = v6_line("wlan0", "::", 0, "fe80::1", ra, metric=600) + v6_line(
        "eth0", "::", 0, "fe80::2", ra, metric=100
    )
    assert pick_default(parse_ipv6_route_table(text)) == Route("eth0", "::", 0, "fe80::2", 100, ra)


@pytest.mark.parametrize(
    "bad",
    [
        REAL_IPV6_ROUTE.splitlines()[0][:-4] + "\n",  # the interface cut off
        "0" * 32 + " 81 " + "0" * 32 + " 00 " + "0" * 32 + " 00000000 0 0 00000003 eth0\n",
        "0" * 31 + " 00 " + "0" * 32 + " 00 " + "0" * 32 + " 00000000 0 0 00000003 eth0\n",
        "0" * 32 + " 00 " + "0" * 32 + " 00 " + "z" * 32 + " 00000000 0 0 00000003 eth0\n",
    ],
)
def test_malformed_ipv6_lines(bad: str) -> None:
    with pytest.raises(RouteFormatError):
        parse_ipv6_route_table(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_route_format_error(text: str) -> None:
    for parse, prefix in (
        (parse_route_table, ROUTE_HEADER),
        (parse_route_table, REAL_ROUTE),
        (parse_ipv6_route_table, ""),
        (parse_ipv6_route_table, REAL_IPV6_ROUTE),
    ):
        with contextlib.suppress(RouteFormatError):
            parse(prefix + text)


# --- default_gateway on a crafted /proc -----------------------------------------------------


def make_proc(tmp_path: Path, route: str | None, ipv6_route: str | None = None) -> str:
    net = tmp_path / "proc" / "net"
    net.mkdir(parents=True, exist_ok=True)
    for name, text in (("route", route), ("ipv6_route", ipv6_route)):
        path = net / name
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(text)
    return str(tmp_path / "proc")


def test_default_gateway_prefers_ipv4_then_ipv6(tmp_path: Path) -> None:
    v4 = ROUTE_HEADER + route_line("eth0", "0.0.0.0", "192.0.2.1", UG)
    v6 = v6_line("eth1", "::", 0, "2001:db8::1", UG)
    assert default_gateway(make_proc(tmp_path, v4, v6)) == ("eth0", "192.0.2.1")
    assert default_gateway(make_proc(tmp_path, ROUTE_HEADER, v6)) == ("eth1", "2001:db8::1")
    assert default_gateway(make_proc(tmp_path, None, v6)) == ("eth1", "2001:db8::1")
    assert default_gateway(make_proc(tmp_path, ROUTE_HEADER, None)) is None
    assert default_gateway(str(tmp_path / "nowhere")) is None
    assert default_route(make_proc(tmp_path, v4, v6), interface="eth1") == Route(
        "eth1", "::", 0, "2001:db8::1", 1024, UG
    )


def test_this_hosts_routing_tables_parse() -> None:
    for name, parse in (("route", parse_route_table), ("ipv6_route", parse_ipv6_route_table)):
        path = Path("/proc/net") / name
        if path.exists():
            parse(path.read_text())
    default_gateway()  # whatever it is, it does not raise


# --- LinkProbe on crafted sysfs trees -------------------------------------------------------


COUNTERS = ("rx_errors", "tx_errors", "rx_dropped", "tx_dropped")


@dataclass
class Tree:
    """A crafted /sys/class/net and /proc for one probe."""

    root: Path
    interfaces: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def sys_root(self) -> str:
        return str(self.root / "sys")

    @property
    def proc_root(self) -> str:
        return str(self.root / "proc")

    def iface(
        self,
        name: str,
        *,
        operstate: str = "up",
        carrier: int | None = 1,
        speed: int | None = 1000,
        ifindex: int = 2,
        counters: Mapping[str, int] | None = None,
    ) -> None:
        base = self.root / "sys" / name
        if base.exists():
            shutil.rmtree(base)
        (base / "statistics").mkdir(parents=True)
        (base / "operstate").write_text(operstate + "\n")
        if carrier is None:
            (base / "carrier").mkdir()  # reading it fails, as sysfs does for a down interface
        else:
            (base / "carrier").write_text(f"{carrier}\n")
        if speed is not None:
            (base / "speed").write_text(f"{speed}\n")
        (base / "ifindex").write_text(f"{ifindex}\n")
        for counter, value in (counters or dict.fromkeys(COUNTERS, 0)).items():
            (base / "statistics" / counter).write_text(f"{value}\n")

    def remove(self, name: str) -> None:
        shutil.rmtree(self.root / "sys" / name)

    def routes(self, *lines: str) -> None:
        make_proc(self.root, ROUTE_HEADER + "".join(lines), "")

    def probe(self, interface: str | None) -> LinkProbe:
        return LinkProbe(interface, sys_root=self.sys_root, proc_root=self.proc_root)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    t = Tree(tmp_path)
    (tmp_path / "sys").mkdir()
    t.routes(route_line("eth0", "0.0.0.0", "192.0.2.1", UG, metric=100))
    return t


def counters(
    rx_errors: int = 0, tx_errors: int = 0, rx_dropped: int = 0, tx_dropped: int = 0
) -> dict[str, int]:
    return {
        "rx_errors": rx_errors,
        "tx_errors": tx_errors,
        "rx_dropped": rx_dropped,
        "tx_dropped": tx_dropped,
    }


def deltas(rx_errors: int, tx_errors: int, rx_dropped: int, tx_dropped: int) -> dict[str, int]:
    return {
        "rx_errors_delta": rx_errors,
        "tx_errors_delta": tx_errors,
        "rx_dropped_delta": rx_dropped,
        "tx_dropped_delta": tx_dropped,
    }


async def test_up_with_speed_and_gateway_and_no_deltas_at_first(tree: Tree) -> None:
    tree.iface("eth0", counters=counters(rx_errors=7))
    result = await tree.probe("eth0").probe_once()
    assert result == ProbeResult(
        ok=True,
        extras={
            "interface": "eth0",
            "operstate": "up",
            "speed_mbps": 1000,
            "gateway": "192.0.2.1",
        },
    )


async def test_deltas_between_attempts(tree: Tree) -> None:
    probe = tree.probe("eth0")
    tree.iface("eth0", counters=counters(rx_errors=7, tx_dropped=100))
    await probe.probe_once()
    tree.iface("eth0", counters=counters(rx_errors=9, tx_errors=1, tx_dropped=100))
    second = await probe.probe_once()
    assert {k: v for k, v in second.extras.items() if k.endswith("_delta")} == deltas(2, 1, 0, 0)
    # a counter that went backwards was reset: it counts from zero
    tree.iface("eth0", counters=counters(rx_errors=3, tx_errors=1, tx_dropped=101))
    third = await probe.probe_once()
    assert {k: v for k, v in third.extras.items() if k.endswith("_delta")} == deltas(3, 0, 0, 1)


async def test_a_recreated_interface_counts_from_zero(tree: Tree) -> None:
    probe = tree.probe("eth0")
    tree.iface("eth0", ifindex=2, counters=counters(rx_dropped=50))
    await probe.probe_once()
    tree.remove("eth0")  # the USB NIC is unplugged ...
    gone = await probe.probe_once()
    assert gone == ProbeResult(ok=False, error="no_interface", extras={"interface": "eth0"})
    tree.iface("eth0", ifindex=5, counters=counters(rx_dropped=60))  # ... and plugged in again
    back = await probe.probe_once()
    assert back.ok
    assert back.extras["rx_dropped_delta"] == 60
    assert back.extras["rx_errors_delta"] == 0


@pytest.mark.parametrize(
    ("operstate", "carrier", "ok"),
    [
        ("up", 1, True),
        ("unknown", 1, True),  # lo, tun: no operstate, but a carrier
        ("unknown", 0, False),
        ("unknown", None, False),
        ("down", 0, False),
        ("down", None, False),
        ("lowerlayerdown", 0, False),
        ("dormant", 1, False),  # e.g. 802.1X not yet authorised
        ("notpresent", 0, False),
        ("testing", 1, False),
    ],
)
async def test_the_up_rule(tree: Tree, operstate: str, carrier: int | None, ok: bool) -> None:
    tree.iface("eth0", operstate=operstate, carrier=carrier)
    result = await tree.probe("eth0").probe_once()
    assert result.ok is ok
    assert result.error == (None if ok else "link_down")
    assert result.extras["operstate"] == operstate
    assert result.extras["interface"] == "eth0"


@pytest.mark.parametrize("speed", [-1, 0, None])
async def test_speed_is_omitted_when_not_reported(tree: Tree, speed: int | None) -> None:
    tree.iface("eth0", speed=speed)
    result = await tree.probe("eth0").probe_once()
    assert "speed_mbps" not in result.extras


async def test_missing_configured_interface_is_no_interface(tree: Tree) -> None:
    result = await tree.probe("usb0").probe_once()
    assert result == ProbeResult(ok=False, error="no_interface", extras={"interface": "usb0"})


async def test_configured_interface_without_default_route_has_no_gateway(tree: Tree) -> None:
    tree.iface("wlan0")
    result = await tree.probe("wlan0").probe_once()
    assert result.ok
    assert "gateway" not in result.extras


async def test_default_route_interface_is_resolved_each_attempt(tree: Tree) -> None:
    tree.iface("eth0", counters=counters(tx_errors=1))
    tree.iface("wlan0", ifindex=3, counters=counters(tx_errors=40))
    probe = tree.probe(None)
    first = await probe.probe_once()
    assert (first.extras["interface"], first.extras["gateway"]) == ("eth0", "192.0.2.1")
    await probe.probe_once()
    # the wired link's route goes; Wi-Fi takes over: a new interface has no deltas yet
    tree.routes(route_line("wlan0", "0.0.0.0", "10.0.0.1", UG, metric=600))
    switched = await probe.probe_once()
    assert switched.ok
    assert switched.extras == {
        "interface": "wlan0",
        "operstate": "up",
        "speed_mbps": 1000,
        "gateway": "10.0.0.1",
    }


async def test_no_default_route(tree: Tree) -> None:
    tree.routes()
    tree.iface("eth0")
    result = await tree.probe(None).probe_once()
    assert result == ProbeResult(ok=False, error="no_default_route")


async def test_route_gone_because_its_interface_went_down_is_link_down(tree: Tree) -> None:
    tree.iface("eth0")
    probe = tree.probe(None)
    assert (await probe.probe_once()).ok
    # `ip link set eth0 down`: the kernel drops the routes through eth0
    tree.routes()
    tree.iface("eth0", operstate="down", carrier=None)
    result = await probe.probe_once()
    assert result.error == "link_down"
    assert result.extras["interface"] == "eth0"
    assert "gateway" not in result.extras
    # it comes back up, but nobody restores the route
    tree.iface("eth0")
    assert await probe.probe_once() == ProbeResult(ok=False, error="no_default_route")


async def test_remembered_interface_removed_is_no_default_route(tree: Tree) -> None:
    tree.iface("eth0")
    probe = tree.probe(None)
    assert (await probe.probe_once()).ok
    tree.routes()
    tree.remove("eth0")
    assert await probe.probe_once() == ProbeResult(ok=False, error="no_default_route")


async def test_default_route_through_a_vanished_interface_is_no_interface(tree: Tree) -> None:
    result = await tree.probe(None).probe_once()
    assert result == ProbeResult(ok=False, error="no_interface", extras={"interface": "eth0"})


async def test_no_sysfs_is_unavailable(tmp_path: Path) -> None:
    probe = LinkProbe("eth0", sys_root=str(tmp_path / "nosys"), proc_root=str(tmp_path))
    with pytest.raises(ProbeUnavailable, match="nosys does not exist"):
        await probe.probe_once()


async def test_garbage_routing_table_is_unavailable(tree: Tree) -> None:
    tree.iface("eth0")
    make_proc(tree.root, ROUTE_HEADER + "eth0 garbage\n")
    with pytest.raises(ProbeUnavailable, match="routing table") as info:
        await tree.probe("eth0").probe_once()
    assert isinstance(info.value.__cause__, RouteFormatError)


@pytest.mark.parametrize("bad", ["", ".", "..", "../eth0", "eth 0", "eth0:1", "a" * 16])
def test_bad_interface_names_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="interface name"):
        LinkProbe(bad)


# --- for real, in network namespaces --------------------------------------------------------

DRIVER = r"""
import asyncio, json, socket, sys
from agent.probes.base import ProbeUnavailable
from agent.probes.link import LinkProbe

async def main():
    probes = {}
    while line := sys.stdin.readline():
        command = line.split()
        if command[0] == "probe":  # probe IFACE|-
            key = command[1]
            probe = probes.setdefault(key, LinkProbe(None if key == "-" else key))
            try:
                result = await probe.probe_once()
                out = {"ok": result.ok, "error": result.error, "extras": dict(result.extras)}
            except ProbeUnavailable as exc:
                out = {"unavailable": str(exc)}
        else:  # send HOST COUNT SIZE: UDP datagrams to the discard port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for _ in range(int(command[2])):
                    sock.sendto(bytes(int(command[3])), (command[1], 9))
            out = {}
        print(json.dumps(out), flush=True)

asyncio.run(main())
"""

ANSWER_TIMEOUT_S = 20.0
SETTLE_TIMEOUT_S = 10.0


class Driver:
    """The link probe running in a process inside a network namespace."""

    def __init__(self, ip: str, namespace: str, stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        with stderr_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                [ip, "netns", "exec", namespace, sys.executable, "-c", DRIVER],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], ANSWER_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise AssertionError(f"the driver did not answer: {self.stderr_path.read_text()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def probe(self, interface: str = "-") -> dict[str, Any]:
        return self.ask(f"probe {interface}")

    def until(
        self, predicate: Callable[[dict[str, Any]], bool], interface: str = "-"
    ) -> dict[str, Any]:
        """Probe until ``predicate`` holds (the kernel applies link changes asynchronously)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            answer = self.probe(interface)
            if predicate(answer) or time.monotonic() > deadline:
                return answer
            time.sleep(0.05)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@dataclass
class Namespaces:
    """Our namespace (``ours``, with veth ``pmv0``) and the peer's (``pmv1``)."""

    ip: str
    ours: str
    peer: str
    tmp_path: Path
    drivers: list[Driver] = field(default_factory=list)

    def run(self, *args: str, namespace: str | None = None) -> None:
        command = [self.ip, "-n", namespace or self.ours, *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed: {done.stderr.strip()}")

    def wire(self) -> None:
        """pmv0 198.51.100.1/24 (MTU 1500) <-> pmv1 198.51.100.2/24 (MTU 1280), both up."""
        self.run("link", "add", "pmv0", "type", "veth", "peer", "name", "pmv1", "netns", self.peer)
        self.run("link", "set", "lo", "up")
        self.run("link", "set", "lo", "up", namespace=self.peer)
        self.run("addr", "add", "198.51.100.1/24", "dev", "pmv0")
        self.run("addr", "add", "198.51.100.2/24", "dev", "pmv1", namespace=self.peer)
        self.run("link", "set", "pmv1", "mtu", "1280", "up", namespace=self.peer)
        self.run("link", "set", "pmv0", "up")

    def driver(self) -> Driver:
        driver = Driver(self.ip, self.ours, self.tmp_path / f"driver-{len(self.drivers)}.err")
        self.drivers.append(driver)
        return driver


@pytest.fixture
def namespaces(tmp_path: Path) -> Iterator[Namespaces]:
    if not sys.platform.startswith("linux"):
        pytest.skip("network namespaces are Linux only")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root")
    ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
    if ip is None:
        pytest.skip("iproute2 (ip) is not installed")
    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    names = [f"posmon-link-{tag}", f"posmon-peer-{tag}"]
    created: list[str] = []
    spaces = Namespaces(ip=ip, ours=names[0], peer=names[1], tmp_path=tmp_path)
    try:
        for name in names:
            done = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot create a network namespace: {done.stderr.strip()}")
            created.append(name)
        yield spaces
    finally:
        for driver in spaces.drivers:
            driver.close()
        for name in created:
            subprocess.run([ip, "netns", "del", name], capture_output=True, check=False)


def is_ok(answer: dict[str, Any]) -> bool:
    return answer.get("ok") is True


def is_failed(answer: dict[str, Any]) -> bool:
    return answer.get("ok") is False


def test_real_default_route_link_up_cable_pulled_and_admin_down(namespaces: Namespaces) -> None:
    namespaces.wire()
    driver = namespaces.driver()
    # only lo's IPv6 "unreachable default" exists: that is no default route
    assert driver.probe() == {"ok": False, "error": "no_default_route", "extras": {}}

    namespaces.run("route", "add", "default", "via", "198.51.100.2")
    up = driver.until(is_ok)
    assert up["ok"], up
    assert up["extras"]["interface"] == "pmv0"
    assert up["extras"]["gateway"] == "198.51.100.2"
    assert up["extras"]["operstate"] == "up"
    assert isinstance(up["extras"]["speed_mbps"], int)
    assert up["extras"]["speed_mbps"] > 0  # veth reports a nominal 10 Gb/s

    # the cable is pulled: the far end goes away, ours loses carrier, the route stays
    namespaces.run("link", "set", "pmv1", "down", namespace=namespaces.peer)
    pulled = driver.until(is_failed)
    assert pulled["error"] == "link_down", pulled
    assert pulled["extras"]["interface"] == "pmv0"
    assert pulled["extras"]["gateway"] == "198.51.100.2"
    assert pulled["extras"]["operstate"] in {"down", "lowerlayerdown"}

    namespaces.run("link", "set", "pmv1", "up", namespace=namespaces.peer)
    assert driver.until(is_ok)["ok"]

    # set down by an administrator: the kernel drops the route through it, the probe
    # still names the interface it saw carrying the default route
    namespaces.run("link", "set", "pmv0", "down")
    down = driver.until(is_failed)
    assert down["error"] == "link_down", down
    assert down["extras"]["interface"] == "pmv0"
    assert down["extras"]["operstate"] == "down"
    assert "gateway" not in down["extras"]


def test_real_ipv6_default_and_ipv4_lowest_metric(namespaces: Namespaces) -> None:
    namespaces.wire()
    namespaces.run("-6", "addr", "add", "fd00:77::1/64", "dev", "pmv0", "nodad")
    namespaces.run(
        "-6", "addr", "add", "fd00:77::2/64", "dev", "pmv1", "nodad", namespace=namespaces.peer
    )
    namespaces.run("-6", "route", "add", "default", "via", "fd00:77::2", "dev", "pmv0")
    driver = namespaces.driver()
    v6 = driver.until(is_ok)
    assert v6["extras"]["gateway"] == "fd00:77::2", v6

    namespaces.run("route", "add", "default", "via", "198.51.100.2", "metric", "100")
    namespaces.run("route", "add", "default", "via", "198.51.100.3", "metric", "50")
    v4 = driver.probe()
    assert v4["ok"], v4
    assert v4["extras"]["gateway"] == "198.51.100.3"  # IPv4 first, then the lowest metric


def test_real_configured_interfaces_and_counter_deltas(namespaces: Namespaces) -> None:
    namespaces.wire()
    driver = namespaces.driver()

    lo = driver.probe("lo")
    assert lo["ok"], lo  # operstate "unknown" with carrier 1: up
    assert lo["extras"]["operstate"] == "unknown"
    assert "speed_mbps" not in lo["extras"]
    assert "gateway" not in lo["extras"]
    assert driver.probe("nosuch0") == {
        "ok": False,
        "error": "no_interface",
        "extras": {"interface": "nosuch0"},
    }

    first = driver.probe("pmv0")
    assert not any(key.endswith("_delta") for key in first["extras"]), first
    assert driver.until(is_ok, "pmv0")["ok"]
    quiet = driver.probe("pmv0")
    for key in ("rx_errors_delta", "tx_errors_delta", "rx_dropped_delta", "tx_dropped_delta"):
        assert isinstance(quiet["extras"][key], int)
        assert quiet["extras"][key] >= 0

    # 1400-byte datagrams fit our MTU (1500) but not the peer's (1280): veth drops them
    assert driver.ask("send 198.51.100.2 5 1400") == {}
    dropped = driver.probe("pmv0")
    assert dropped["extras"]["tx_dropped_delta"] == 5, dropped
    assert dropped["extras"]["tx_errors_delta"] == 0
    assert dropped["extras"]["rx_errors_delta"] == 0
    assert driver.probe("pmv0")["extras"]["tx_dropped_delta"] == 0

    namespaces.run("link", "set", "lo", "down")
    lo_down = driver.probe("lo")
    assert lo_down["error"] == "link_down"
    assert lo_down["extras"]["operstate"] == "down"
