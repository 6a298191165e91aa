"""The collector's settings: loaded once from CLI flags and an optional TOML file.

    SettingsError(ValueError)   a bad flag, file, key or value; the message
                                names where it came from (the flag, or the
                                file and ``[table] key``) and why it is bad.

Precedence: a flag given on the command line beats the file, which beats the
defaults. Unknown tables and keys in the file are errors (a typo must not be
silently ignored). The result is a frozen :class:`CollectorSettings` passed
down to everything else.

File layout (see ``deploy/collector.toml``)::

    [server]
    listen = "127.0.0.1:8780"
    db = "/var/lib/posmon/collector.db"
    max_body_bytes = 8388608
    max_events_per_report = 5000
    tls_cert = "/etc/posmon/collector.crt"
    tls_key = "/etc/posmon/collector.key"

    [log]
    level = "info"
    format = "auto"

    [attribution]          # how a failed payment gets its cause (defaults below)
    [incidents]            # when incidents close
    [alerts]               # where incident alerts go (webhook, e-mail)

The ``[attribution]``, ``[incidents]`` and ``[alerts]`` tables are read from
the file only (no flags); they become :class:`AttributionSettings`,
:class:`IncidentSettings` and :class:`AlertSettings`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

from agent.logs import LogFormat
from protocol.codec import MAX_BODY_BYTES, MAX_EVENTS_PER_REPORT

DEFAULT_LISTEN = "127.0.0.1:8780"
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_EVENTS_PER_REPORT = 5000
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class SettingsError(ValueError):
    """A setting that cannot be used; the message says where, which and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AttributionSettings:
    """How the correlator names the cause of a failed payment (README, "Attribution")."""

    #: evidence is read from this long before a payment started ...
    before_s: int = 300
    #: ... to this long after it ended
    after_s: int = 120
    #: late evidence (an offline store's backlog) revises payments up to this old
    revise_horizon_s: int = 86400
    #: acquirer outage: failures to one acquirer within +/- this many seconds ...
    fleet_window_s: int = 300
    #: ... in at least this many stores whose own link/gateway/ISP/DNS are healthy,
    fleet_min_stores: int = 3
    #: ... of which at least this many saw the acquirer itself fail (its probes failing, or a
    #: technical response code); stores whose failures nothing explains count only beside them
    fleet_min_acquirer_evidence: int = 2
    #: a probe window with at least this loss counts as failing
    loss_fail_pct: float = 50.0
    #: a clock offset past this (either way) blames the clock
    clock_max_offset_ms: float = 1000.0
    #: host starvation: CPU, memory or disk at or past these
    cpu_starved_pct: float = 95.0
    mem_starved_pct: float = 95.0
    disk_full_pct: float = 98.0
    #: a terminal not heard from for this long is offline
    offline_after_s: int = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentSettings:
    """When incidents open and close."""

    #: a payment incident closes when no payment in its scope failed for this long
    close_after_s: int = 600
    #: a health incident (device fault, UPS on battery) opens after this long in trouble
    health_open_after_s: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertSettings:
    """Where alerts on incident open and close go. No webhook and no SMTP host: no alerts."""

    webhook_url: str | None = None
    webhook_timeout_s: float = 10.0
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "posmon@localhost"
    smtp_to: tuple[str, ...] = ()
    #: delivery is retried with exponential backoff from this ...
    retry_initial_s: float = 5.0
    #: ... up to this between attempts
    retry_max_s: float = 600.0
    #: an alert not delivered after this long is given up (counted and logged)
    give_up_after_s: float = 86400.0

    @property
    def enabled(self) -> bool:
        return self.webhook_url is not None or self.smtp_host is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectorSettings:
    """Everything the collector needs to run, validated."""

    db: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 8780
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_events_per_report: int = DEFAULT_MAX_EVENTS_PER_REPORT
    tls_cert: Path | None = None
    tls_key: Path | None = None
    log_level: str = "info"
    log_format: LogFormat = "auto"
    attribution: AttributionSettings = AttributionSettings()
    incidents: IncidentSettings = IncidentSettings()
    alerts: AlertSettings = AlertSettings()

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


# --- validators: raw value (str from a flag, any TOML value from the file) -> typed value ----


def _check_db(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a database file path")
    if value.startswith(_POSTGRES_SCHEMES):
        raise ValueError("PostgreSQL backend not available yet; use a SQLite file path for now")
    if "://" in value:
        raise ValueError(f"{value!r} is not a file path (only SQLite files are supported)")
    return value


def parse_listen(value: Any) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) into its parts; port 0 picks a free port."""
    if not isinstance(value, str):
        raise ValueError('expected a string "HOST:PORT"')
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f'{value!r} is not of the form "HOST:PORT"')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, like [::1]:8780")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: port must be a number from 0 to 65535")
    return host, int(port_text)


def int_between(low: int, high: int, *, from_text: bool = False) -> Callable[[Any], int]:
    """A validator of an integer in ``low..high`` (also as text, for flags, with ``from_text``)."""

    def check(value: Any) -> int:
        if from_text and isinstance(value, str):
            try:
                value = int(value.replace("_", ""), 10)
            except ValueError:
                raise ValueError(f"{value!r} is not an integer") from None
        if type(value) is not int:
            raise ValueError("expected an integer")
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range; allowed {low}..{high}")
        return value

    return check


def _path(value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a file path")
    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError(f"{value!r} is not a readable file")
    return path


def number_between(low: float, high: float) -> Callable[[Any], float]:
    """A validator of a number (integer or float) in ``low..high``."""

    def check(value: Any) -> float:
        if type(value) not in (int, float):
            raise ValueError("expected a number")
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range; allowed {low:g}..{high:g}")
        return float(value)

    return check


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value


def _http_url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    if not urlsplit(value).hostname:
        raise ValueError(f"{value!r} has no host name")
    return value


def boolean(value: Any) -> bool:
    """A validator of ``true``/``false``."""
    if type(value) is not bool:
        raise ValueError("expected true or false")
    return value


def _addresses(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError('expected a list of e-mail addresses, like ["it@example.com"]')
    for item in value:
        if not isinstance(item, str) or "@" not in item or any(c.isspace() for c in item):
            raise ValueError(f"{item!r} is not an e-mail address")
    return tuple(value)


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in options:
            raise ValueError(f"{value!r} is not one of {', '.join(options)}")
        return value.lower()

    return check


#: file table -> key -> validator. A key's settings name is the key itself, or
#: ``log_`` + key for the [log] table; its CLI flag is ``--`` plus that name
#: with dashes (``max_body_bytes`` -> ``--max-body-bytes``, ``level`` -> ``--log-level``).
_SCHEMA: Mapping[str, Mapping[str, Callable[[Any], Any]]] = {
    "server": {
        "listen": parse_listen,
        "db": _check_db,
        "max_body_bytes": int_between(1024, MAX_BODY_BYTES, from_text=True),
        "max_events_per_report": int_between(1, MAX_EVENTS_PER_REPORT, from_text=True),
        "tls_cert": _path,
        "tls_key": _path,
    },
    "log": {
        "level": _choice(LOG_LEVELS),
        "format": _choice(LOG_FORMATS),
    },
}

_DAY = 86400
#: tables read from the file only: table -> (settings type, key -> validator)
_SECTIONS: Mapping[str, tuple[type[Any], Mapping[str, Callable[[Any], Any]]]] = {
    "attribution": (
        AttributionSettings,
        {
            "before_s": int_between(0, _DAY),
            "after_s": int_between(0, _DAY),
            "revise_horizon_s": int_between(0, 30 * _DAY),
            "fleet_window_s": int_between(10, _DAY),
            "fleet_min_stores": int_between(2, 100_000),
            "fleet_min_acquirer_evidence": int_between(1, 100_000),
            "loss_fail_pct": number_between(1, 100),
            "clock_max_offset_ms": number_between(1, 86_400_000),
            "cpu_starved_pct": number_between(1, 100),
            "mem_starved_pct": number_between(1, 100),
            "disk_full_pct": number_between(1, 100),
            "offline_after_s": int_between(10, 30 * _DAY),
        },
    ),
    "incidents": (
        IncidentSettings,
        {
            "close_after_s": int_between(10, 30 * _DAY),
            "health_open_after_s": int_between(0, _DAY),
        },
    ),
    "alerts": (
        AlertSettings,
        {
            "webhook_url": _http_url,
            "webhook_timeout_s": number_between(0.1, 300),
            "smtp_host": _text,
            "smtp_port": int_between(1, 65535),
            "smtp_starttls": boolean,
            "smtp_username": _text,
            "smtp_password": _text,
            "smtp_from": _text,
            "smtp_to": _addresses,
            "retry_initial_s": number_between(0.01, 3600),
            "retry_max_s": number_between(0.01, _DAY),
            "give_up_after_s": number_between(1, 30 * _DAY),
        },
    ),
}

#: Names of the keys a caller may override from the command line.
OVERRIDABLE = tuple(
    f"log_{key}" if table == "log" else key for table, keys in _SCHEMA.items() for key in keys
)


def flag_of(name: str) -> str:
    """The CLI flag of an overridable setting (``log_level`` -> ``--log-level``)."""
    return "--" + name.replace("_", "-")


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"{path}: config file not found") from None
    except OSError as err:
        raise SettingsError(f"{path}: cannot read config file: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise SettingsError(f"{path}: not valid TOML: {err}") from None


def _section(path: Path, table: str, content: Any) -> Any:
    """A file-only table as its frozen settings type; every mistake names the key."""
    cls, keys = _SECTIONS[table]
    if not isinstance(content, dict):
        raise SettingsError(f"{path}: {table!r} must be a table [{table}]")
    values: dict[str, Any] = {}
    for key, value in content.items():
        if key not in keys:
            known = ", ".join(keys)
            raise SettingsError(f"{path}: [{table}] unknown key {key!r}; known keys: {known}")
        try:
            values[key] = keys[key](value)
        except ValueError as err:
            raise SettingsError(f"{path}: [{table}] {key}: {err}") from None
    built = cls(**values)
    if table == "alerts":
        if built.smtp_host is not None and not built.smtp_to:
            raise SettingsError(f"{path}: [alerts] smtp_to: smtp_host needs recipients")
        if built.smtp_to and built.smtp_host is None:
            raise SettingsError(f"{path}: [alerts] smtp_host: smtp_to needs an SMTP server")
        if (built.smtp_username is None) != (built.smtp_password is None):
            raise SettingsError(
                f"{path}: [alerts] smtp_password: give smtp_username and smtp_password together"
            )
        if built.retry_max_s < built.retry_initial_s:
            raise SettingsError(f"{path}: [alerts] retry_max_s: smaller than retry_initial_s")
    if table == "attribution" and built.fleet_min_acquirer_evidence > built.fleet_min_stores:
        raise SettingsError(
            f"{path}: [attribution] fleet_min_acquirer_evidence: larger than fleet_min_stores"
        )
    if table == "attribution" and built.fleet_window_s > built.revise_horizon_s > 0:
        raise SettingsError(f"{path}: [attribution] revise_horizon_s: shorter than fleet_window_s")
    return built


def _from_file(path: Path) -> tuple[dict[str, tuple[str, Any]], dict[str, Any]]:
    """(settings name -> (where it came from, raw value), file-only sections), checked."""
    out: dict[str, tuple[str, Any]] = {}
    sections: dict[str, Any] = {}
    for table, content in _read_file(path).items():
        if table in _SECTIONS:
            sections[table] = _section(path, table, content)
            continue
        if table not in _SCHEMA:
            known = ", ".join(f"[{t}]" for t in (*_SCHEMA, *_SECTIONS))
            raise SettingsError(f"{path}: unknown table or key {table!r}; known tables: {known}")
        if not isinstance(content, dict):
            raise SettingsError(f"{path}: {table!r} must be a table [{table}]")
        for key, value in content.items():
            if key not in _SCHEMA[table]:
                known = ", ".join(_SCHEMA[table])
                raise SettingsError(f"{path}: [{table}] unknown key {key!r}; known keys: {known}")
            name = f"log_{key}" if table == "log" else key
            out[name] = (f"{path}: [{table}] {key}", value)
    return out, sections


def load_settings(
    *,
    config: Path | None = None,
    overrides: Mapping[str, str | None] | None = None,
) -> CollectorSettings:
    """Settings from an optional TOML file and CLI flags (``None`` = flag not given).

    ``overrides`` keys are the names in :data:`OVERRIDABLE` (``db``, ``listen``,
    ``max_body_bytes``, ``log_level``, ...).
    """
    raw, sections = _from_file(config) if config is not None else ({}, {})
    for name, value in (overrides or {}).items():
        if name not in OVERRIDABLE:
            raise SettingsError(f"{flag_of(name)}: unknown setting")
        if value is not None:
            raw[name] = (flag_of(name), value)

    validators = {
        (f"log_{key}" if table == "log" else key): check
        for table, keys in _SCHEMA.items()
        for key, check in keys.items()
    }
    values: dict[str, Any] = {}
    for name, (source, value) in raw.items():
        try:
            values[name] = validators[name](value)
        except ValueError as err:
            raise SettingsError(f"{source}: {err}") from None

    if "db" not in values:
        raise SettingsError("db: no database given; pass --db PATH or set [server] db in --config")
    if ("tls_cert" in values) != ("tls_key" in values):
        given, missing = (
            ("tls_cert", "tls_key") if "tls_cert" in values else ("tls_key", "tls_cert")
        )
        raise SettingsError(f"{raw[given][0]}: {given} needs {missing} too (give both or neither)")
    if "listen" in values:
        values["listen_host"], values["listen_port"] = values.pop("listen")
    else:
        values["listen_host"], values["listen_port"] = parse_listen(DEFAULT_LISTEN)
    return CollectorSettings(**values, **sections)
