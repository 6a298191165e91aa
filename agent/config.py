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
using the ``_req_*`` / ``_opt_*`` readers below, and add one line to
``load_config``. The readers record each key they are asked for, so a key
in the file that no reader asked for is reported as unknown, with the
closest known key suggested.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import reprlib
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, get_args
from urllib.parse import urlsplit

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

KiB: Final = 1024
MiB: Final = 1024 * KiB


class ConfigError(Exception):
    """A mistake in the config file: which file, which dotted key, and why."""

    file: str
    key: str
    reason: str

    def __init__(self, file: str, key: str, reason: str) -> None:
        super().__init__(file, key, reason)
        self.file = file
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.reason}"


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


# ── loading ─────────────────────────────────────────────────────────────────


def load_config(path: str | os.PathLike[str]) -> AgentSettings:
    """Read and validate the agent config at ``path``; raise ConfigError on any mistake."""
    file = os.fspath(path)
    config_path = Path(file).absolute()
    base = config_path.parent
    root = _Section(file, "", _read_toml(file))

    settings = AgentSettings(
        config_path=config_path,
        agent=_section(root, "agent", _parse_agent, base, required=True),
        collector=_section(root, "collector", _parse_collector, base, required=True),
        spool=_section(root, "spool", _parse_spool, base, required=True),
        uplink=_section(root, "uplink", _parse_uplink, base),
        host=_section(root, "host", _parse_host, base),
        api=_section(root, "api", _parse_api, base),
        log=_section(root, "log", _parse_log, base),
        synthetic=_section(root, "synthetic", _parse_synthetic, base),
    )
    _reject_unknown(root)
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


def _parse_agent(sec: _Section, base: Path) -> IdentitySettings:
    return IdentitySettings(
        terminal_id=_req_str(sec, "terminal_id", pattern=_ID_RE, rule=_ID_RULE),
        store_id=_req_str(sec, "store_id", pattern=_ID_RE, rule=_ID_RULE),
    )


def _parse_collector(sec: _Section, base: Path) -> CollectorLinkSettings:
    url = _parse_url(sec, "url")
    token = _opt_str(sec, "token", None)
    token_file = _opt_path(sec, "token_file", None, base=base)
    if token is not None and token_file is not None:
        raise sec.error("token", "set either token or token_file, not both")
    if token_file is not None:
        token = _read_token_file(sec, "token_file", token_file)
    elif token is None:
        raise sec.error("token", "missing required key: set token or token_file")
    else:
        token = _check_token(sec, "token", token)
    ca_file = _opt_path(sec, "ca_file", None, base=base)
    if ca_file is not None and not os.path.isfile(ca_file):
        raise sec.error("ca_file", f"file not found: {ca_file}")
    return CollectorLinkSettings(
        url=url,
        token=token,
        timeout_s=_opt_float(sec, "timeout_s", 10.0, gt=0),
        ca_file=ca_file,
    )


def _parse_spool(sec: _Section, base: Path) -> SpoolSettings:
    return SpoolSettings(
        path=_req_path(sec, "path", base=base),
        max_bytes=_opt_bytes(sec, "max_bytes", 64 * MiB, ge=64 * KiB),
        max_age_s=_opt_float(sec, "max_age_s", 7 * 86400.0, gt=0),
        sync=_opt_choice(sec, "sync", "full", _SYNC_MODES),
    )


def _parse_uplink(sec: _Section, base: Path) -> UplinkSettings:
    uplink = UplinkSettings(
        interval_s=_opt_float(sec, "interval_s", 5.0, gt=0),
        batch_max_events=_opt_int(sec, "batch_max_events", 500, ge=1, le=10_000),
        batch_max_bytes=_opt_bytes(sec, "batch_max_bytes", 512 * KiB, ge=KiB, le=16 * MiB),
        backoff_initial_s=_opt_float(sec, "backoff_initial_s", 1.0, gt=0),
        backoff_max_s=_opt_float(sec, "backoff_max_s", 300.0, gt=0),
    )
    if uplink.backoff_max_s < uplink.backoff_initial_s:
        raise sec.error(
            "backoff_max_s",
            f"must be ≥ backoff_initial_s ({_num(uplink.backoff_initial_s)}), "
            f"got {_num(uplink.backoff_max_s)}",
        )
    return uplink


def _parse_host(sec: _Section, base: Path) -> HostSettings:
    return HostSettings(
        interval_s=_opt_float(sec, "interval_s", 60.0, gt=0),
        disk_path=_opt_path(sec, "disk_path", Path("/"), base=None),
    )


def _parse_api(sec: _Section, base: Path) -> ApiSettings:
    enabled = _opt_bool(sec, "enabled", True)
    host, port = _parse_loopback_listen(sec, "listen", "127.0.0.1:8787")
    return ApiSettings(enabled=enabled, host=host, port=port)


def _parse_log(sec: _Section, base: Path) -> LogSettings:
    return LogSettings(
        level=_opt_choice(sec, "level", "info", _LOG_LEVELS),
        format=_opt_choice(sec, "format", "auto", _LOG_FORMATS),
    )


def _parse_synthetic(sec: _Section, base: Path) -> SyntheticSettings:
    return SyntheticSettings(rate_per_s=_opt_float(sec, "rate_per_s", 0.0, ge=0))


# ── value parsers shared by sections ────────────────────────────────────────


def _parse_url(sec: _Section, key: str) -> str:
    raw = _req_str(sec, key)
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


def _read_token_file(sec: _Section, key: str, path: Path) -> str:
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


def _check_token(sec: _Section, key: str, token: str, *, source: str = "the token") -> str:
    if not token:
        raise sec.error(key, "must not be empty")
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise sec.error(key, f"{source} must be one line of printable ASCII without spaces")
    return token


def _parse_loopback_listen(sec: _Section, key: str, default: str) -> tuple[str, int]:
    raw = _opt_str(sec, key, default)
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


# ── typed readers ───────────────────────────────────────────────────────────
#
# Each reader takes the section, a key and (for optional keys) the default,
# checks the type and range, and records the key as known. TOML booleans are
# never accepted as numbers.

_T = TypeVar("_T")
_S = TypeVar("_S", bound=str)


@dataclass(slots=True)
class _Section:
    """One TOML table being read: where it came from, and which keys were asked for."""

    file: str
    name: str  # dotted path of the table; "" for the document root
    table: dict[str, Any]
    known: list[str] = field(default_factory=list)

    def dotted(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.file, self.dotted(key), reason)

    def get(self, key: str) -> Any:
        if key not in self.known:
            self.known.append(key)
        return self.table.get(key)


def _section(
    parent: _Section,
    name: str,
    parse: Callable[[_Section, Path], _T],
    base: Path,
    *,
    required: bool = False,
) -> _T:
    """Parse the sub-table ``[name]`` of ``parent`` with ``parse``; reject unknown keys."""
    value = parent.get(name)
    if value is None:
        if required:
            raise _missing(parent, name, what=f"section [{parent.dotted(name)}]")
        value = {}
    if not isinstance(value, dict):
        raise parent.error(name, f"expected a table [{parent.dotted(name)}], got {_kind(value)}")
    sec = _Section(parent.file, parent.dotted(name), value)
    result = parse(sec, base)
    _reject_unknown(sec)
    return result


def _reject_unknown(sec: _Section) -> None:
    for key in sec.table:
        if key not in sec.known:
            what = "section" if not sec.name else "key"
            hint = difflib.get_close_matches(key, sec.known, n=1)
            reason = f"unknown {what}"
            if hint:
                reason += f"; did you mean {hint[0]!r}?"
            else:
                reason += f"; known: {', '.join(sec.known)}"
            raise sec.error(key, reason)


def _missing(sec: _Section, key: str, *, what: str = "key") -> ConfigError:
    reason = f"missing required {what}"
    typo = difflib.get_close_matches(key, [k for k in sec.table if k not in sec.known], n=1)
    if typo:
        reason += f" (is {sec.dotted(typo[0])!r} a misspelling of it?)"
    return sec.error(key, reason)


def _kind(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names |= {list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _wrong_type(sec: _Section, key: str, expected: str, value: object) -> ConfigError:
    return sec.error(key, f"expected {expected}, got {_kind(value)} ({reprlib.repr(value)})")


def _req_str(
    sec: _Section, key: str, *, pattern: re.Pattern[str] | None = None, rule: str = ""
) -> str:
    value = sec.get(key)
    if value is None:
        raise _missing(sec, key)
    return _check_str(sec, key, value, pattern, rule)


def _opt_str(sec: _Section, key: str, default: _T) -> str | _T:
    value = sec.get(key)
    if value is None:
        return default
    return _check_str(sec, key, value, None, "")


def _check_str(
    sec: _Section, key: str, value: object, pattern: re.Pattern[str] | None, rule: str
) -> str:
    if not isinstance(value, str):
        raise _wrong_type(sec, key, "a string", value)
    if not value:
        raise sec.error(key, "must not be empty")
    if pattern is not None and not pattern.fullmatch(value):
        raise sec.error(key, f"must be {rule}, got {value!r}")
    return value


def _opt_bool(sec: _Section, key: str, default: bool) -> bool:
    value = sec.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _wrong_type(sec, key, "true or false", value)
    return value


def _opt_float(
    sec: _Section,
    key: str,
    default: float,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
) -> float:
    value = sec.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong_type(sec, key, "a number", value)
    number = float(value)
    if not math.isfinite(number):
        raise sec.error(key, f"must be a finite number, got {value!r}")
    _check_range(sec, key, number, gt=gt, ge=ge, le=le)
    return number


def _opt_int(
    sec: _Section, key: str, default: int, *, ge: int | None = None, le: int | None = None
) -> int:
    value = sec.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(sec, key, "an integer", value)
    _check_range(sec, key, value, ge=ge, le=le)
    return value


_SIZE_RE: Final = re.compile(r"\s*(\d+)\s*([A-Za-z]*)\s*")
_SIZE_UNITS: Final = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "kB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": KiB,
    "MiB": MiB,
    "GiB": 1024 * MiB,
}


def _opt_bytes(
    sec: _Section, key: str, default: int, *, ge: int | None = None, le: int | None = None
) -> int:
    """A size in bytes: an integer, or a string such as "64MiB", "512KiB", "10MB"."""
    value = sec.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        match = _SIZE_RE.fullmatch(value)
        if match is None or match[2] not in _SIZE_UNITS:
            raise sec.error(
                key,
                f"expected a byte count or a size such as '64MiB', '512KiB', '1GiB' or "
                f"'10MB' (units: {', '.join(u for u in _SIZE_UNITS if u)}), got {value!r}",
            )
        size = int(match[1]) * _SIZE_UNITS[match[2]]
    elif isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        raise _wrong_type(sec, key, "an integer or a size string such as '64MiB'", value)
    _check_range(sec, key, size, ge=ge, le=le, unit=" bytes")
    return size


def _opt_choice(sec: _Section, key: str, default: _S, choices: tuple[_S, ...]) -> _S:
    value = sec.get(key)
    if value is None:
        return default
    for choice in choices:
        if value == choice:
            return choice
    allowed = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise _wrong_type(sec, key, f"one of {allowed}", value)
    raise sec.error(key, f"must be one of {allowed}, got {value!r}")


def _req_path(sec: _Section, key: str, *, base: Path | None) -> Path:
    value = sec.get(key)
    if value is None:
        raise _missing(sec, key)
    return _check_path(sec, key, value, base)


def _opt_path(sec: _Section, key: str, default: _T, *, base: Path | None) -> Path | _T:
    """A path; a relative one is taken from ``base`` (the config file's directory) if given."""
    value = sec.get(key)
    if value is None:
        return default
    return _check_path(sec, key, value, base)


def _check_path(sec: _Section, key: str, value: object, base: Path | None) -> Path:
    text = _check_str(sec, key, value, None, "")
    if "\0" in text:
        raise sec.error(key, "must not contain a NUL character")
    path = Path(text)
    if base is not None and not path.is_absolute():
        path = base / path
    return path


def _check_range(
    sec: _Section,
    key: str,
    value: float,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    unit: str = "",
) -> None:
    if gt is not None and not value > gt:
        raise sec.error(key, f"must be > {_num(gt)}{unit}, got {_num(value)}{unit}")
    if ge is not None and not value >= ge:
        raise sec.error(key, f"must be ≥ {_num(ge)}{unit}, got {_num(value)}{unit}")
    if le is not None and not value <= le:
        raise sec.error(key, f"must be ≤ {_num(le)}{unit}, got {_num(value)}{unit}")


def _num(value: float) -> str:
    """1, 0.5, 65536 — not 1.0 or 6.5536e+04."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
