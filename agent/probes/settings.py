"""The ``[probes]`` table and the ``[[probe]]`` list of the agent's config.

::

    [probes]
    window_s = 60          # one probe_window per probe per window
    interval_s = 10        # default time between two attempts of one probe
    timeout_s = 3          # default limit of one attempt
    fail_after = 3         # consecutive failed attempts before a probe is "fail"
    recover_after = 2      # consecutive good attempts before it is "ok" again
    defaults = true        # with no [[probe]]: probe link, gateway, resolver, collector

    [[probe]]
    type = "tcp"           # icmp tcp dns tls http ntp link wifi
    target = "pay.acquirer-a.example:443"
    role = "acquirer"      # link gateway dns isp acquirer collector
    acquirer = "acquirer-a"
    name = "acquirer-a"    # optional; unique; default "<type>:<target>"

What ``target`` means depends on the type: a host (``icmp``; ``gateway``
for the default gateway), ``host:port`` (``tcp``, ``tls``; IPv6 as
``[::1]:443``), ``host[:port]`` of a server (``ntp``; ``dns``, where
``system`` is the first resolver of /etc/resolv.conf), a URL (``http``), an
interface name or ``auto`` (``link``, ``wifi``). See the README for every
key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit

from protocol.events import Role

from ..configkit import (
    ConfigError,
    Section,
    opt_bool,
    opt_choice,
    opt_float,
    opt_int,
    opt_path,
    opt_str,
    reject_unknown,
    req_str,
)

ProbeType = Literal["icmp", "tcp", "dns", "tls", "http", "ntp", "link", "wifi"]
PROBE_TYPES: Final[tuple[ProbeType, ...]] = get_args(ProbeType)
ROLES: Final[tuple[Role, ...]] = get_args(Role)

#: Roles a type gets when the config names none; the others must say.
DEFAULT_ROLE: Final[dict[str, Role]] = {"link": "link", "wifi": "link", "dns": "dns"}
DEFAULT_PORT: Final[dict[str, int]] = {"dns": 53, "ntp": 123}


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """One configured probe: what to probe, how often, and what its failure means."""

    name: str
    type: ProbeType
    target: str  # as written (or generated), for reports
    role: Role
    acquirer: str | None = None
    interval_s: float = 10.0
    timeout_s: float = 3.0
    host: str | None = None  # icmp tcp tls ntp dns ("system" = resolv.conf)
    port: int | None = None  # tcp tls ntp dns
    url: str | None = None  # http
    interface: str | None = None  # link wifi; None = the default route's
    query: str | None = None  # dns: the name asked for
    qtype: Literal["A", "AAAA"] = "A"
    server_name: str | None = None  # tls: SNI and the name checked; default host
    ca_file: Path | None = None  # tls http
    max_offset_ms: float = 1000.0  # ntp: a larger offset fails as clock_offset
    weak_dbm: float = -75.0  # wifi: a weaker signal fails as weak_signal


@dataclass(frozen=True, slots=True)
class ProbesSettings:
    window_s: float = 60.0
    interval_s: float = 10.0
    timeout_s: float = 3.0
    fail_after: int = 3
    recover_after: int = 2
    defaults: bool = True
    probes: tuple[ProbeSpec, ...] = ()


def parse_probes(root: Section, base: Path, collector_url: str) -> ProbesSettings:
    """Read ``[probes]`` and ``[[probe]]`` from the document root."""
    table = root.get("probes")
    if table is None:
        table = {}
    if not isinstance(table, dict):
        raise root.error("probes", "expected a table [probes]")
    sec = Section(root.file, "probes", table)
    settings = ProbesSettings(
        window_s=opt_float(sec, "window_s", 60.0, ge=1, le=3600),
        interval_s=opt_float(sec, "interval_s", 10.0, ge=0.1, le=3600),
        timeout_s=opt_float(sec, "timeout_s", 3.0, ge=0.05, le=120),
        fail_after=opt_int(sec, "fail_after", 3, ge=1, le=100),
        recover_after=opt_int(sec, "recover_after", 2, ge=1, le=100),
        defaults=opt_bool(sec, "defaults", True),
    )
    reject_unknown(sec)

    items = root.get("probe")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise root.error("probe", "expected an array of tables: write each as [[probe]]")
    specs: list[ProbeSpec] = []
    for index, item in enumerate(items):
        key = f"probe[{index}]"
        if not isinstance(item, dict):
            raise root.error(key, "expected a table: write each probe as [[probe]]")
        item_sec = Section(root.file, key, item)
        spec = _parse_one(item_sec, base, settings)
        reject_unknown(item_sec)
        if any(s.name == spec.name for s in specs):
            raise item_sec.error("name", f"another probe is already named {spec.name!r}")
        if any((s.type, s.target) == (spec.type, spec.target) for s in specs):
            raise item_sec.error("target", f"another {spec.type} probe has this target")
        specs.append(spec)
    if not specs and settings.defaults:
        specs = default_probes(settings, collector_url)
    return ProbesSettings(
        window_s=settings.window_s,
        interval_s=settings.interval_s,
        timeout_s=settings.timeout_s,
        fail_after=settings.fail_after,
        recover_after=settings.recover_after,
        defaults=settings.defaults,
        probes=tuple(specs),
    )


def default_probes(settings: ProbesSettings, collector_url: str) -> list[ProbeSpec]:
    """The minimal install: the link, the default gateway, the system resolver, the collector.

    The resolver is asked for the collector's host name (skipped when the
    collector is given by address); the collector is probed with a TLS
    handshake for ``https`` (which also watches its certificate), else a
    TCP connect.
    """
    common: dict[str, Any] = {"interval_s": settings.interval_s, "timeout_s": settings.timeout_s}
    parts = urlsplit(collector_url)
    host = parts.hostname or "localhost"
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    specs = [
        ProbeSpec(name="link", type="link", target="auto", role="link", **common),
        ProbeSpec(
            name="gateway", type="icmp", target="gateway", role="gateway", host="gateway", **common
        ),
    ]
    if not _is_address(host):
        specs.append(
            ProbeSpec(
                name="resolver",
                type="dns",
                target=f"{host}@system",
                role="dns",
                host="system",
                port=53,
                query=host,
                **common,
            )
        )
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    specs.append(
        ProbeSpec(
            name="collector",
            type="tls" if https else "tcp",
            target=hostport,
            role="collector",
            host=host,
            port=port,
            **common,
        )
    )
    return specs


# ── one [[probe]] ───────────────────────────────────────────────────────────


def _parse_one(sec: Section, base: Path, defaults: ProbesSettings) -> ProbeSpec:
    if sec.get("type") is None:
        raise sec.error("type", f"missing required key: one of {', '.join(PROBE_TYPES)}")
    type_ = opt_choice(sec, "type", "icmp", PROBE_TYPES)
    target = req_str(sec, "target")
    role_default = DEFAULT_ROLE.get(type_)
    if sec.get("role") is None and role_default is None:
        raise sec.error("role", f"missing required key: one of {', '.join(ROLES)}")
    role = opt_choice(sec, "role", role_default or "link", ROLES)
    acquirer = opt_str(sec, "acquirer", None)
    if role == "acquirer" and acquirer is None:
        raise sec.error("acquirer", "a probe with role 'acquirer' must name the acquirer")
    if role != "acquirer" and acquirer is not None:
        raise sec.error(
            "acquirer", f"only a probe with role 'acquirer' names one (role is {role!r})"
        )
    if acquirer is not None and len(acquirer) > 128:
        raise sec.error("acquirer", "must be at most 128 characters")
    name = opt_str(sec, "name", None)
    if name is not None and len(name) > 128:
        raise sec.error("name", "must be at most 128 characters")
    fields: dict[str, Any] = {
        "type": type_,
        "target": target,
        "role": role,
        "acquirer": acquirer,
        "interval_s": opt_float(sec, "interval_s", defaults.interval_s, ge=0.1, le=3600),
        "timeout_s": opt_float(sec, "timeout_s", defaults.timeout_s, ge=0.05, le=120),
    }
    fields.update(_TARGETS[type_](sec, target, base))
    if type_ == "dns":  # one resolver may be asked several names: each is its own target
        fields["target"] = f"{fields['query']}@{target}"
    if len(fields["target"]) > 256:
        raise sec.error("target", "must be at most 256 characters")
    fields["name"] = name or f"{type_}:{fields['target']}"
    return ProbeSpec(**fields)


def _host_only(sec: Section, target: str, base: Path) -> dict[str, Any]:
    if target != "gateway":
        _check_host(sec, target)
    return {"host": target}


def _host_port_required(sec: Section, target: str, base: Path) -> dict[str, Any]:
    host, port = _split_host_port(sec, target, default_port=None)
    out: dict[str, Any] = {"host": host, "port": port}
    if sec.table.get("type") == "tls":
        out["server_name"] = opt_str(sec, "server_name", None)
        out["ca_file"] = _ca_file(sec, base)
    return out


def _server(sec: Section, target: str, base: Path) -> dict[str, Any]:
    type_ = str(sec.table["type"])
    if type_ == "dns" and target == "system":
        host, port = "system", 53
    else:
        host, port = _split_host_port(sec, target, default_port=DEFAULT_PORT[type_])
    out: dict[str, Any] = {"host": host, "port": port}
    if type_ == "dns":
        out["query"] = req_str(sec, "query")
        out["qtype"] = opt_choice(sec, "qtype", "A", ("A", "AAAA"))
    else:
        out["max_offset_ms"] = opt_float(sec, "max_offset_ms", 1000.0, gt=0)
    return out


def _url(sec: Section, target: str, base: Path) -> dict[str, Any]:
    try:
        parts = urlsplit(target)
        _ = parts.port
    except ValueError as err:
        raise sec.error("target", f"not a valid URL ({err}): {target!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise sec.error("target", f"expected an http:// or https:// URL, got {target!r}")
    return {"url": target, "ca_file": _ca_file(sec, base)}


def _interface(sec: Section, target: str, base: Path) -> dict[str, Any]:
    if target != "auto" and (len(target) > 15 or "/" in target or any(c.isspace() for c in target)):
        raise sec.error("target", f"expected an interface name or 'auto', got {target!r}")
    out: dict[str, Any] = {"interface": None if target == "auto" else target}
    if sec.table.get("type") == "wifi":
        out["weak_dbm"] = opt_float(sec, "weak_dbm", -75.0, ge=-150, le=0)
    return out


_TARGETS: Final = {
    "icmp": _host_only,
    "tcp": _host_port_required,
    "tls": _host_port_required,
    "dns": _server,
    "ntp": _server,
    "http": _url,
    "link": _interface,
    "wifi": _interface,
}


def _ca_file(sec: Section, base: Path) -> Path | None:
    path = opt_path(sec, "ca_file", None, base=base)
    if path is not None and not path.is_file():
        raise sec.error("ca_file", f"file not found: {path}")
    return path


def _split_host_port(sec: Section, target: str, *, default_port: int | None) -> tuple[str, int]:
    if target.startswith("["):
        host, sep, rest = target[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise sec.error("target", f"expected '[IPv6]:PORT', got {target!r}")
        port_text = rest[1:] if rest else ""
    elif target.count(":") == 1:
        host, _, port_text = target.partition(":")
    elif ":" in target:
        raise sec.error(
            "target", f"write an IPv6 address in brackets, as '[::1]:443', got {target!r}"
        )
    else:
        host, port_text = target, ""
    if not port_text:
        if default_port is None:
            raise sec.error(
                "target", f"expected 'HOST:PORT' such as 'pay.example:443', got {target!r}"
            )
        port = default_port
    elif port_text.isascii() and port_text.isdigit() and 0 < int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise sec.error("target", f"port must be a number 1–65535, got {target!r}")
    _check_host(sec, host)
    return host, port


def _check_host(sec: Section, host: str) -> None:
    if _is_address(host):
        return
    labels = host.rstrip(".").split(".")
    ok = (
        bool(host)
        and len(host) <= 253
        and all(
            0 < len(label) <= 63
            and all(c.isalnum() or c in "-_" for c in label)
            and label.isascii()
            for label in labels
        )
    )
    if not ok:
        raise sec.error("target", f"not a host name or IP address: {host!r}")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


__all__ = [
    "PROBE_TYPES",
    "ConfigError",
    "ProbeSpec",
    "ProbeType",
    "ProbesSettings",
    "default_probes",
    "parse_probes",
]
