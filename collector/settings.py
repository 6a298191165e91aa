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
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

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


def _int_between(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, str):
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
        "max_body_bytes": _int_between(1024, MAX_BODY_BYTES),
        "max_events_per_report": _int_between(1, MAX_EVENTS_PER_REPORT),
        "tls_cert": _path,
        "tls_key": _path,
    },
    "log": {
        "level": _choice(LOG_LEVELS),
        "format": _choice(LOG_FORMATS),
    },
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


def _from_file(path: Path) -> dict[str, tuple[str, Any]]:
    """Settings name -> (where it came from, raw value), checking for unknown keys."""
    out: dict[str, tuple[str, Any]] = {}
    for table, content in _read_file(path).items():
        if table not in _SCHEMA:
            known = ", ".join(f"[{t}]" for t in _SCHEMA)
            raise SettingsError(f"{path}: unknown table or key {table!r}; known tables: {known}")
        if not isinstance(content, dict):
            raise SettingsError(f"{path}: {table!r} must be a table [{table}]")
        for key, value in content.items():
            if key not in _SCHEMA[table]:
                known = ", ".join(_SCHEMA[table])
                raise SettingsError(f"{path}: [{table}] unknown key {key!r}; known keys: {known}")
            name = f"log_{key}" if table == "log" else key
            out[name] = (f"{path}: [{table}] {key}", value)
    return out


def load_settings(
    *,
    config: Path | None = None,
    overrides: Mapping[str, str | None] | None = None,
) -> CollectorSettings:
    """Settings from an optional TOML file and CLI flags (``None`` = flag not given).

    ``overrides`` keys are the names in :data:`OVERRIDABLE` (``db``, ``listen``,
    ``max_body_bytes``, ``log_level``, ...).
    """
    raw = _from_file(config) if config is not None else {}
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
    return CollectorSettings(**values)
