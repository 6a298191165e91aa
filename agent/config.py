"""The agent's TOML config, loaded once into frozen settings and passed down.

``load_config(path)`` reads the file with :mod:`tomllib`, checks every value
and returns an :class:`AgentSettings`. Any mistake raises :class:`ConfigError`
(and nothing else) naming the file, the dotted key and the reason::

    /etc/posmon/agent.toml: uplink.intervl_s: unknown key; did you mean 'interval_s'?

Errors::

    Exception
     └── ConfigError        file, key, reason; str() == "file: key: reason"

Keys that are not about a single TOML key use a placeholder: ``<file>`` when
the file cannot be read, ``<toml>`` for a syntax error (the reason carries
tomllib's line and column).

To add a section: write a ``_parse_<name>(sec, base) -> <Name>Settings``
using the ``req_*`` / ``opt_*`` readers of :mod:`agent.configkit`, and add
one line to ``load_config``. The readers record each key they are asked for, so a key
in the file that no reader asked for is reported as unknown, with the
closest known key suggested.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit

from .configkit import (
    ConfigError,
    KiB,
    MiB,
    Section,
    num,
    opt_bool,
    opt_bytes,
    opt_choice,
    opt_float,
    opt_int,
    opt_path,
    opt_str,
    reject_unknown,
    req_path,
    req_str,
    section,
)
from .devices.base import DeviceSpec
from .devices.settings import parse_devices
from .logtail.settings import LogFileSpec, parse_logfiles
from .payments.settings import PaymentsSettings, parse_payments
from .probes.settings import ProbesSettings, parse_probes

__all__ = [
    "AgentSettings",
    "ApiSettings",
    "CollectorLinkSettings",
    "ConfigError",
    "HostSettings",
    "IdentitySettings",
    "LogSettings",
    "SpoolSettings",
    "SyntheticSettings",
    "UplinkSettings",
    "load_config",
]

SyncMode = Literal["full", "normal"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]

_SYNC_MODES: Final[tuple[SyncMode, ...]] = get_args(SyncMode)
_LOG_LEVELS: Final[tuple[LogLevel, ...]] = get_args(LogLevel)
_LOG_FORMATS: Final[tuple[LogFormat, ...]] = get_args(LogFormat)


# ── settings ────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    terminal_id: str
    store_id: str


@dataclass(frozen=True, slots=True)
class CollectorLinkSettings:
    url: str  # http(s)://host[:port][/path], no trailing slash
    token: str = field(repr=False)  # never printed by repr()
    timeout_s: float = 10.0
    ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class SpoolSettings:
    path: Path
    max_bytes: int = 64 * MiB
    max_age_s: float = 7 * 86400.0
    sync: SyncMode = "full"


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    interval_s: float = 5.0
    batch_max_events: int = 500
    batch_max_bytes: int = 512 * KiB
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0


@dataclass(frozen=True, slots=True)
class HostSettings:
    interval_s: float = 60.0
    disk_path: Path = Path("/")


@dataclass(frozen=True, slots=True)
class ApiSettings:
    enabled: bool = True
    host: str = "127.0.0.1"  # loopback only; IPv6 without brackets ("::1")
    port: int = 8787  # 0 = any free port


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: LogLevel = "info"
    format: LogFormat = "auto"


@dataclass(frozen=True, slots=True)
class SyntheticSettings:
    rate_per_s: float = 0.0  # synthetic events per second; 0 = off


@dataclass(frozen=True, slots=True)
class AgentSettings:
    config_path: Path
    agent: IdentitySettings
    collector: CollectorLinkSettings
    spool: SpoolSettings
    uplink: UplinkSettings
    host: HostSettings
    api: ApiSettings
    log: LogSettings
    synthetic: SyntheticSettings
    probes: ProbesSettings
    devices: tuple[DeviceSpec, ...] = ()
    payments: PaymentsSettings = field(default_factory=PaymentsSettings)
    logfiles: tuple[LogFileSpec, ...] = ()


# ── loading ─────────────────────────────────────────────────────────────────


def load_config(path: str | os.PathLike[str]) -> AgentSettings:
    """Read and validate the agent config at ``path``; raise ConfigError on any mistake."""
    file = os.fspath(path)
    config_path = Path(file).absolute()
    base = config_path.parent
    root = Section(file, "", _read_toml(file))

    agent = section(root, "agent", _parse_agent, base, required=True)
    collector = section(root, "collector", _parse_collector, base, required=True)
    settings = AgentSettings(
        config_path=config_path,
        agent=agent,
        collector=collector,
        spool=section(root, "spool", _parse_spool, base, required=True),
        uplink=section(root, "uplink", _parse_uplink, base),
        host=section(root, "host", _parse_host, base),
        api=section(root, "api", _parse_api, base),
        log=section(root, "log", _parse_log, base),
        synthetic=section(root, "synthetic", _parse_synthetic, base),
        probes=parse_probes(root, base, collector.url),
        devices=parse_devices(root, base),
        payments=section(root, "payments", parse_payments, base),
        logfiles=parse_logfiles(root, base),
    )
    reject_unknown(root)
    return settings


def _read_toml(file: str) -> dict[str, Any]:
    try:
        with open(file, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(file, "<file>", "config file not found") from None
    except OSError as err:
        raise ConfigError(file, "<file>", f"cannot read config file: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(file, "<toml>", f"invalid TOML: {err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(file, "<toml>", f"invalid TOML: not UTF-8 ({err.reason})") from err
    except RecursionError as err:
        raise ConfigError(file, "<toml>", "invalid TOML: values nested too deeply") from err


# ── sections ────────────────────────────────────────────────────────────────

_ID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_ID_RULE: Final = "1–128 characters from A–Z a–z 0–9 . _ : -"


def _parse_agent(sec: Section, base: Path) -> IdentitySettings:
    return IdentitySettings(
        terminal_id=req_str(sec, "terminal_id", pattern=_ID_RE, rule=_ID_RULE),
        store_id=req_str(sec, "store_id", pattern=_ID_RE, rule=_ID_RULE),
    )


def _parse_collector(sec: Section, base: Path) -> CollectorLinkSettings:
    url = _parse_url(sec, "url")
    token = opt_str(sec, "token", None)
    token_file = opt_path(sec, "token_file", None, base=base)
    if token is not None and token_file is not None:
        raise sec.error("token", "set either token or token_file, not both")
    if token_file is not None:
        token = _read_token_file(sec, "token_file", token_file)
    elif token is None:
        raise sec.error("token", "missing required key: set token or token_file")
    else:
        token = _check_token(sec, "token", token)
    ca_file = opt_path(sec, "ca_file", None, base=base)
    if ca_file is not None and not os.path.isfile(ca_file):
        raise sec.error("ca_file", f"file not found: {ca_file}")
    return CollectorLinkSettings(
        url=url,
        token=token,
        timeout_s=opt_float(sec, "timeout_s", 10.0, gt=0),
        ca_file=ca_file,
    )


def _parse_spool(sec: Section, base: Path) -> SpoolSettings:
    return SpoolSettings(
        path=req_path(sec, "path", base=base),
        max_bytes=opt_bytes(sec, "max_bytes", 64 * MiB, ge=64 * KiB),
        max_age_s=opt_float(sec, "max_age_s", 7 * 86400.0, gt=0),
        sync=opt_choice(sec, "sync", "full", _SYNC_MODES),
    )


def _parse_uplink(sec: Section, base: Path) -> UplinkSettings:
    uplink = UplinkSettings(
        interval_s=opt_float(sec, "interval_s", 5.0, gt=0),
        batch_max_events=opt_int(sec, "batch_max_events", 500, ge=1, le=10_000),
        batch_max_bytes=opt_bytes(sec, "batch_max_bytes", 512 * KiB, ge=KiB, le=16 * MiB),
        backoff_initial_s=opt_float(sec, "backoff_initial_s", 1.0, gt=0),
        backoff_max_s=opt_float(sec, "backoff_max_s", 300.0, gt=0),
    )
    if uplink.backoff_max_s < uplink.backoff_initial_s:
        raise sec.error(
            "backoff_max_s",
            f"must be ≥ backoff_initial_s ({num(uplink.backoff_initial_s)}), "
            f"got {num(uplink.backoff_max_s)}",
        )
    return uplink


def _parse_host(sec: Section, base: Path) -> HostSettings:
    return HostSettings(
        interval_s=opt_float(sec, "interval_s", 60.0, gt=0),
        disk_path=opt_path(sec, "disk_path", Path("/"), base=None),
    )


def _parse_api(sec: Section, base: Path) -> ApiSettings:
    enabled = opt_bool(sec, "enabled", True)
    host, port = _parse_loopback_listen(sec, "listen", "127.0.0.1:8787")
    return ApiSettings(enabled=enabled, host=host, port=port)


def _parse_log(sec: Section, base: Path) -> LogSettings:
    return LogSettings(
        level=opt_choice(sec, "level", "info", _LOG_LEVELS),
        format=opt_choice(sec, "format", "auto", _LOG_FORMATS),
    )


def _parse_synthetic(sec: Section, base: Path) -> SyntheticSettings:
    return SyntheticSettings(rate_per_s=opt_float(sec, "rate_per_s", 0.0, ge=0))


# ── value parsers shared by sections ────────────────────────────────────────


def _parse_url(sec: Section, key: str) -> str:
    raw = req_str(sec, key)
    url = raw.rstrip("/")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as err:
        raise sec.error(key, f"not a valid URL ({err}): {raw!r}") from None
    if parts.scheme not in ("http", "https"):
        raise sec.error(key, f"must start with http:// or https://, got {raw!r}")
    if not parts.hostname:
        raise sec.error(key, f"must name a host, got {raw!r}")
    if parts.query or parts.fragment or any(c.isspace() for c in url):
        raise sec.error(key, f"must not contain spaces, a query or a fragment, got {raw!r}")
    if parts.username is not None or parts.password is not None:
        raise sec.error(key, "must not contain credentials; use token or token_file")
    return url


_TOKEN_FILE_MAX: Final = 64 * KiB


def _read_token_file(sec: Section, key: str, path: Path) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(_TOKEN_FILE_MAX + 1)
    except OSError as err:
        raise sec.error(key, f"cannot read {path}: {err.strerror}") from err
    if len(data) > _TOKEN_FILE_MAX:
        raise sec.error(key, f"{path} is too large to be a token file")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise sec.error(key, f"{path} is not a text file") from None
    if not text:
        raise sec.error(key, f"{path} is empty")
    return _check_token(sec, key, text, source=str(path))


def _check_token(sec: Section, key: str, token: str, *, source: str = "the token") -> str:
    if not token:
        raise sec.error(key, "must not be empty")
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise sec.error(key, f"{source} must be one line of printable ASCII without spaces")
    return token


def _parse_loopback_listen(sec: Section, key: str, default: str) -> tuple[str, int]:
    raw = opt_str(sec, key, default)
    if raw.startswith("["):
        host, sep, port_text = raw[1:].partition("]:")
        if not sep:
            raise sec.error(key, f"expected '[IPv6]:PORT', got {raw!r}")
    else:
        host, sep, port_text = raw.rpartition(":")
        if not sep:
            raise sec.error(key, f"expected 'HOST:PORT' such as '127.0.0.1:8787', got {raw!r}")
        if ":" in host:
            raise sec.error(key, f"write an IPv6 address in brackets, as '[::1]:8787', got {raw!r}")
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise sec.error(key, f"port must be a number 0–65535 (0 = any free port), got {raw!r}")
    if host.lower() == "localhost":
        host = "localhost"
    else:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is None or not address.is_loopback:
            raise sec.error(
                key,
                "the local API is loopback-only for security (it must not be reachable "
                f"from the network): use 127.x.x.x, [::1] or localhost, got {host!r}",
            )
        host = str(address)
    return host, int(port_text)
