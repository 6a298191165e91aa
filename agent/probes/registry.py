"""From a configured :class:`ProbeSpec` to a callable that makes one attempt.

One builder per probe type, found by the spec's ``type`` in :data:`BUILDERS`
(no if/elif chain). A built probe is ``async () -> ProbeResult`` and keeps
whatever state it needs between attempts (the link probe's counters).
Targets that depend on the host — the default gateway, the system resolver,
the default route's interface — are looked up again on every attempt, so a
DHCP renewal or a replugged NIC is followed without a restart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from . import dns, http, icmp, link, ntp, tcp, tls, wifi
from .base import ProbeResult
from .settings import ProbeSpec

ProbeFn = Callable[[], Awaitable[ProbeResult]]

#: Where the system resolver is read from (a test may point elsewhere).
RESOLV_CONF = "/etc/resolv.conf"


def build(spec: ProbeSpec) -> ProbeFn:
    """The attempt function for ``spec``."""
    return BUILDERS[spec.type](spec)


def _icmp(spec: ProbeSpec) -> ProbeFn:
    assert spec.host is not None

    async def attempt() -> ProbeResult:
        host = spec.host
        if host == "gateway":
            found = link.default_gateway()
            if found is None:
                return ProbeResult(ok=False, error="no_default_route")
            host = found[1]
        assert host is not None
        return await icmp.probe_once(host, timeout_s=spec.timeout_s)

    return attempt


def _tcp(spec: ProbeSpec) -> ProbeFn:
    assert spec.host is not None and spec.port is not None
    host, port = spec.host, spec.port

    async def attempt() -> ProbeResult:
        return await tcp.probe_once(host, port, timeout_s=spec.timeout_s)

    return attempt


def _tls(spec: ProbeSpec) -> ProbeFn:
    assert spec.host is not None and spec.port is not None
    host, port = spec.host, spec.port
    cafile = None if spec.ca_file is None else str(spec.ca_file)

    async def attempt() -> ProbeResult:
        return await tls.probe_once(
            host, port, server_name=spec.server_name, timeout_s=spec.timeout_s, cafile=cafile
        )

    return attempt


def _http(spec: ProbeSpec) -> ProbeFn:
    assert spec.url is not None
    url = spec.url
    cafile = None if spec.ca_file is None else str(spec.ca_file)

    async def attempt() -> ProbeResult:
        return await http.probe_once(url, timeout_s=spec.timeout_s, cafile=cafile)

    return attempt


def _dns(spec: ProbeSpec) -> ProbeFn:
    assert spec.host is not None and spec.query is not None
    query, port = spec.query, spec.port or 53

    async def attempt() -> ProbeResult:
        server = spec.host
        if server == "system":
            server = dns.system_resolver(RESOLV_CONF)
            if server is None:
                return ProbeResult(ok=False, error="no_resolver")
        assert server is not None
        return await dns.probe_once(
            query, server=server, port=port, qtype=spec.qtype, timeout_s=spec.timeout_s
        )

    return attempt


def _ntp(spec: ProbeSpec) -> ProbeFn:
    assert spec.host is not None
    server, port = spec.host, spec.port or 123

    async def attempt() -> ProbeResult:
        result = await ntp.probe_once(server, port=port, timeout_s=spec.timeout_s)
        offset = result.extras.get("clock_offset_ms")
        if result.ok and isinstance(offset, float | int) and abs(offset) > spec.max_offset_ms:
            return ProbeResult(
                ok=False, rtt_ms=result.rtt_ms, error="clock_offset", extras=result.extras
            )
        return result

    return attempt


def _link(spec: ProbeSpec) -> ProbeFn:
    return link.LinkProbe(spec.interface).probe_once


def _wifi(spec: ProbeSpec) -> ProbeFn:
    return wifi.WifiProbe(spec.interface, weak_dbm=spec.weak_dbm).probe_once


BUILDERS: Final[dict[str, Callable[[ProbeSpec], ProbeFn]]] = {
    "icmp": _icmp,
    "tcp": _tcp,
    "tls": _tls,
    "http": _http,
    "dns": _dns,
    "ntp": _ntp,
    "link": _link,
    "wifi": _wifi,
}
