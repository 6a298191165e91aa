"""Link probe: the state of this host's own network interface (Linux).

The pure part parses the kernel's routing tables: ``/proc/net/route`` (IPv4;
addresses are 32-bit numbers printed in hex in the host's byte order, which is
little-endian on x86 and ARM) and ``/proc/net/ipv6_route`` (IPv6; addresses
in network order).  A *default route* has destination 0, prefix length 0 and
the flags RTF_UP and RTF_GATEWAY, and not RTF_REJECT (a fresh network
namespace has an IPv6 "unreachable default" on ``lo``).  :func:`default_gateway`
picks the IPv4 default route with the lowest metric and falls back to IPv6;
a default route without a gateway (``default dev tun0``) is not counted.  A
malformed table raises :class:`RouteFormatError` and nothing else.

:class:`LinkProbe` reads ``/sys/class/net/<interface>``: ``operstate``,
``carrier``, ``speed``, ``ifindex`` and four counters under ``statistics/``.
The link is **up** when operstate is ``up``, or when it is ``unknown`` and
carrier reads 1 (``lo``, tun/tap and some virtual drivers never report an
operstate).  Every other operstate (``down``, ``lowerlayerdown``,
``dormant``, ``notpresent``, ``testing``, or ``unknown`` without carrier) is
down.

Error codes:

- ``link_down``: the interface exists and is not up.  With ``interface=None``
  this is also reported when there is no default route any more but the
  interface that carried it on the previous attempt is down (the kernel
  removes IPv4 routes through an interface that is set down);
- ``no_default_route``: ``interface=None`` and there is no default route;
- ``no_interface``: the configured interface does not exist (a USB NIC that
  was unplugged) — a failure of the target, not :class:`ProbeUnavailable`.

Extras: ``interface``, ``operstate``, ``speed_mbps`` (only when sysfs reports
a positive speed), ``gateway`` (the lowest-metric default route through the
interface, when there is one), and ``rx_errors_delta``, ``tx_errors_delta``,
``rx_dropped_delta``, ``tx_dropped_delta``: how much each counter grew since
the previous attempt on the same interface.  The first attempt on an
interface has no deltas (there is nothing to subtract).  A counter that went
backwards, or an interface whose ifindex changed (it was re-created, e.g.
re-plugged), counts from zero: the delta is the current value.  ``rtt_ms`` is
always None.

:class:`ProbeUnavailable` is raised when ``/sys/class/net`` does not exist
(not Linux) or a routing table cannot be parsed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import string
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from protocol.fields import Scalar

from .base import ProbeResult, ProbeUnavailable

RTF_UP = 0x0001
RTF_GATEWAY = 0x0002
RTF_REJECT = 0x0200
COUNTERS = ("rx_errors", "tx_errors", "rx_dropped", "tx_dropped")
_MAX_IFNAME = 15  # IFNAMSIZ - 1


class RouteFormatError(ValueError):
    """A routing table line is malformed."""


@dataclass(frozen=True, slots=True)
class Route:
    """One line of a kernel routing table."""

    interface: str
    destination: str
    prefix_len: int
    #: None when the route has no gateway (RTF_GATEWAY not set)
    gateway: str | None
    metric: int
    flags: int

    @property
    def is_default(self) -> bool:
        """An active default route via a gateway."""
        return (
            self.prefix_len == 0
            and self.destination in {"0.0.0.0", "::"}
            and self.flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY
            and not self.flags & RTF_REJECT
        )


def _hex(word: str, what: str, digits: int | None = None) -> int:
    if not word or any(c not in string.hexdigits for c in word):
        raise RouteFormatError(f"{what} {word!r} is not hexadecimal")
    if digits is not None and len(word) != digits:
        raise RouteFormatError(f"{what} {word!r} is not {digits} hex digits")
    return int(word, 16)


def _ipv4(word: str, what: str) -> ipaddress.IPv4Address:
    # the kernel prints the address as a host-order 32-bit number
    return ipaddress.IPv4Address(_hex(word, what, 8).to_bytes(4, sys.byteorder))


def parse_route_table(text: str) -> list[Route]:
    """The routes of a ``/proc/net/route`` text (its header line is skipped)."""
    routes: list[Route] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or (number == 1 and words[0] == "Iface"):
            continue
        if len(words) < 8:
            raise RouteFormatError(f"line {number} has {len(words)} fields, fewer than 8")
        iface, dest, gateway, flags, _refcnt, _use, metric, mask = words[:8]
        flag_bits = _hex(flags, "flags")
        mask_bits = int.from_bytes(_ipv4(mask, "mask").packed, "big")
        prefix = bin(mask_bits).count("1")
        if mask_bits != (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF:
            raise RouteFormatError(f"line {number}: mask {mask} is not contiguous")
        if not metric.isascii() or not metric.isdigit():
            raise RouteFormatError(f"line {number}: metric {metric!r} is not a number")
        gateway_address = _ipv4(gateway, "gateway")
        routes.append(
            Route(
                interface=iface,
                destination=str(_ipv4(dest, "destination")),
                prefix_len=prefix,
                gateway=str(gateway_address) if flag_bits & RTF_GATEWAY else None,
                metric=int(metric),
                flags=flag_bits,
            )
        )
    return routes


def parse_ipv6_route_table(text: str) -> list[Route]:
    """The routes of a ``/proc/net/ipv6_route`` text (no header line)."""
    routes: list[Route] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if len(words) != 10:
            raise RouteFormatError(f"line {number} has {len(words)} fields, not 10")
        dest, dest_len, _src, _src_len, gateway, metric, _ref, _use, flags, iface = words
        prefix = _hex(dest_len, "prefix length", 2)
        if prefix > 128:
            raise RouteFormatError(f"line {number}: prefix length {prefix} > 128")
        flag_bits = _hex(flags, "flags", 8)
        destination = ipaddress.IPv6Address(_hex(dest, "destination", 32))
        gateway_address = ipaddress.IPv6Address(_hex(gateway, "gateway", 32))
        routes.append(
            Route(
                interface=iface,
                destination=str(destination),
                prefix_len=prefix,
                gateway=str(gateway_address) if flag_bits & RTF_GATEWAY else None,
                metric=_hex(metric, "metric", 8),
                flags=flag_bits,
            )
        )
    return routes


def pick_default(routes: Iterable[Route], interface: str | None = None) -> Route | None:
    """The default route with the lowest metric (the first on a tie), or None.

    With ``interface``, only default routes through that interface count.
    """
    best: Route | None = None
    for route in routes:
        if not route.is_default or (interface is not None and route.interface != interface):
            continue
        if best is None or route.metric < best.metric:
            best = route
    return best


def _read_optional(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return ""


def default_route(proc_root: str = "/proc", interface: str | None = None) -> Route | None:
    """The default route of this host: IPv4 first, then IPv6 (see :func:`pick_default`).

    A missing table counts as empty; a malformed one raises :class:`RouteFormatError`.
    """
    net = Path(proc_root) / "net"
    route = pick_default(parse_route_table(_read_optional(net / "route")), interface)
    if route is None:
        route = pick_default(parse_ipv6_route_table(_read_optional(net / "ipv6_route")), interface)
    return route


def default_gateway(proc_root: str = "/proc") -> tuple[str, str] | None:
    """(interface, gateway address) of the default route, or None if there is none."""
    route = default_route(proc_root)
    if route is None or route.gateway is None:
        return None
    return route.interface, route.gateway


@dataclass(frozen=True, slots=True)
class LinkState:
    """What sysfs says about one interface at one moment."""

    name: str
    operstate: str
    #: None when carrier cannot be read (the kernel refuses while the interface is down)
    carrier: bool | None
    #: None when the driver reports no speed (virtual interfaces, link down, -1)
    speed_mbps: int | None
    ifindex: int | None
    counters: Mapping[str, int] = field(default_factory=dict)

    @property
    def is_up(self) -> bool:
        """operstate ``up``, or ``unknown`` with carrier (lo, tun)."""
        return self.operstate == "up" or (self.operstate == "unknown" and self.carrier is True)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def read_link_state(sys_root: str, name: str) -> LinkState | None:
    """The state of interface ``name`` under ``sys_root``, or None if it does not exist."""
    base = Path(sys_root) / name
    try:
        operstate = (base / "operstate").read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return None
    except OSError:
        operstate = "unknown"
    carrier = _read_int(base / "carrier")
    speed = _read_int(base / "speed")
    counters = {}
    for counter in COUNTERS:
        value = _read_int(base / "statistics" / counter)
        if value is not None and value >= 0:
            counters[counter] = value
    return LinkState(
        name=name,
        operstate=operstate or "unknown",
        carrier=None if carrier is None else carrier == 1,
        speed_mbps=speed if speed is not None and speed > 0 else None,
        ifindex=_read_int(base / "ifindex"),
        counters=counters,
    )


def counter_deltas(previous: LinkState | None, current: LinkState) -> dict[str, int]:
    """How much each counter grew from ``previous`` to ``current`` (see the module doc)."""
    if previous is None or previous.name != current.name:
        return {}
    recreated = previous.ifindex != current.ifindex
    deltas: dict[str, int] = {}
    for counter, value in current.counters.items():
        before = previous.counters.get(counter)
        if before is None:
            continue
        deltas[f"{counter}_delta"] = value if recreated or value < before else value - before
    return deltas


def _check_interface_name(name: str) -> None:
    if (
        not 1 <= len(name) <= _MAX_IFNAME
        or name in {".", ".."}
        or "/" in name
        or ":" in name
        or any(c.isspace() for c in name)
    ):
        raise ValueError(f"{name!r} is not a valid interface name")


@dataclass(frozen=True, slots=True)
class _Observation:
    name: str | None
    state: LinkState | None
    route: Route | None


class LinkProbe:
    """The state of one interface, or of the interface of the default route."""

    def __init__(
        self,
        interface: str | None = None,
        *,
        sys_root: str = "/sys/class/net",
        proc_root: str = "/proc",
    ) -> None:
        if interface is not None:
            _check_interface_name(interface)
        self.interface = interface
        self.sys_root = sys_root
        self.proc_root = proc_root
        self._last: LinkState | None = None
        self._last_name: str | None = None

    def _observe(self, remembered: str | None) -> _Observation:
        if not Path(self.sys_root).is_dir():
            raise ProbeUnavailable(f"{self.sys_root} does not exist: link state needs Linux sysfs")
        try:
            route = default_route(self.proc_root, self.interface)
        except (RouteFormatError, OSError) as exc:
            raise ProbeUnavailable(f"cannot read the routing table: {exc}") from exc
        name = self.interface
        if name is None:
            name = route.interface if route is not None else remembered
        state = read_link_state(self.sys_root, name) if name is not None else None
        return _Observation(name=name, state=state, route=route)

    async def probe_once(self) -> ProbeResult:
        """One look at the link; never raises for a link failure."""
        seen = await asyncio.to_thread(self._observe, self._last_name)
        state, route = seen.state, seen.route
        if state is None:
            if seen.name is not None and (self.interface is not None or route is not None):
                return ProbeResult(ok=False, error="no_interface", extras={"interface": seen.name})
            return ProbeResult(ok=False, error="no_default_route")
        if route is None and self.interface is None and state.is_up:
            # the remembered interface is up but carries no default route any more
            return ProbeResult(ok=False, error="no_default_route")
        extras: dict[str, Scalar] = {"interface": state.name, "operstate": state.operstate}
        if state.speed_mbps is not None:
            extras["speed_mbps"] = state.speed_mbps
        if route is not None and route.gateway is not None:
            extras["gateway"] = route.gateway
        extras.update(counter_deltas(self._last, state))
        self._last = state
        self._last_name = state.name
        if not state.is_up:
            return ProbeResult(ok=False, error="link_down", extras=extras)
        return ProbeResult(ok=True, extras=extras)
