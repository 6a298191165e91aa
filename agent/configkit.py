"""Typed readers for TOML config sections: each names the file, the key and the reason.

Every reader takes a :class:`Section`, a key and (for optional keys) the
default, checks the type and range, and records the key as known, so that
:func:`reject_unknown` can report a key no reader asked for, with the closest
known key suggested. TOML booleans are never accepted as numbers.

Errors::

    Exception
     └── ConfigError        file, key, reason; str() == "file: key: reason"
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

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


# ── typed readers ───────────────────────────────────────────────────────────
#
# Each reader takes the section, a key and (for optional keys) the default,
# checks the type and range, and records the key as known. TOML booleans are
# never accepted as numbers.

_T = TypeVar("_T")
_S = TypeVar("_S", bound=str)


@dataclass(slots=True)
class Section:
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


def section(
    parent: Section,
    name: str,
    parse: Callable[[Section, Path], _T],
    base: Path,
    *,
    required: bool = False,
) -> _T:
    """Parse the sub-table ``[name]`` of ``parent`` with ``parse``; reject unknown keys."""
    value = parent.get(name)
    if value is None:
        if required:
            raise missing(parent, name, what=f"section [{parent.dotted(name)}]")
        value = {}
    if not isinstance(value, dict):
        raise parent.error(name, f"expected a table [{parent.dotted(name)}], got {kind(value)}")
    sec = Section(parent.file, parent.dotted(name), value)
    result = parse(sec, base)
    reject_unknown(sec)
    return result


def reject_unknown(sec: Section) -> None:
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


def missing(sec: Section, key: str, *, what: str = "key") -> ConfigError:
    reason = f"missing required {what}"
    typo = difflib.get_close_matches(key, [k for k in sec.table if k not in sec.known], n=1)
    if typo:
        reason += f" (is {sec.dotted(typo[0])!r} a misspelling of it?)"
    return sec.error(key, reason)


def kind(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names |= {list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def wrong_type(sec: Section, key: str, expected: str, value: object) -> ConfigError:
    return sec.error(key, f"expected {expected}, got {kind(value)} ({reprlib.repr(value)})")


def req_str(
    sec: Section, key: str, *, pattern: re.Pattern[str] | None = None, rule: str = ""
) -> str:
    value = sec.get(key)
    if value is None:
        raise missing(sec, key)
    return check_str(sec, key, value, pattern, rule)


def opt_str(sec: Section, key: str, default: _T) -> str | _T:
    value = sec.get(key)
    if value is None:
        return default
    return check_str(sec, key, value, None, "")


def check_str(
    sec: Section, key: str, value: object, pattern: re.Pattern[str] | None, rule: str
) -> str:
    if not isinstance(value, str):
        raise wrong_type(sec, key, "a string", value)
    if not value:
        raise sec.error(key, "must not be empty")
    if pattern is not None and not pattern.fullmatch(value):
        raise sec.error(key, f"must be {rule}, got {value!r}")
    return value


def opt_bool(sec: Section, key: str, default: bool) -> bool:
    value = sec.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise wrong_type(sec, key, "true or false", value)
    return value


def opt_float(
    sec: Section,
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
        raise wrong_type(sec, key, "a number", value)
    number = float(value)
    if not math.isfinite(number):
        raise sec.error(key, f"must be a finite number, got {value!r}")
    check_range(sec, key, number, gt=gt, ge=ge, le=le)
    return number


def opt_int(
    sec: Section, key: str, default: int, *, ge: int | None = None, le: int | None = None
) -> int:
    value = sec.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(sec, key, "an integer", value)
    check_range(sec, key, value, ge=ge, le=le)
    return value


SIZE_RE: Final = re.compile(r"\s*(\d+)\s*([A-Za-z]*)\s*")
SIZE_UNITS: Final = {
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


def opt_bytes(
    sec: Section, key: str, default: int, *, ge: int | None = None, le: int | None = None
) -> int:
    """A size in bytes: an integer, or a string such as "64MiB", "512KiB", "10MB"."""
    value = sec.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        match = SIZE_RE.fullmatch(value)
        if match is None or match[2] not in SIZE_UNITS:
            raise sec.error(
                key,
                f"expected a byte count or a size such as '64MiB', '512KiB', '1GiB' or "
                f"'10MB' (units: {', '.join(u for u in SIZE_UNITS if u)}), got {value!r}",
            )
        size = int(match[1]) * SIZE_UNITS[match[2]]
    elif isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        raise wrong_type(sec, key, "an integer or a size string such as '64MiB'", value)
    check_range(sec, key, size, ge=ge, le=le, unit=" bytes")
    return size


def opt_choice(sec: Section, key: str, default: _S, choices: tuple[_S, ...]) -> _S:
    value = sec.get(key)
    if value is None:
        return default
    for choice in choices:
        if value == choice:
            return choice
    allowed = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise wrong_type(sec, key, f"one of {allowed}", value)
    raise sec.error(key, f"must be one of {allowed}, got {value!r}")


def req_path(sec: Section, key: str, *, base: Path | None) -> Path:
    value = sec.get(key)
    if value is None:
        raise missing(sec, key)
    return check_path(sec, key, value, base)


def opt_path(sec: Section, key: str, default: _T, *, base: Path | None) -> Path | _T:
    """A path; a relative one is taken from ``base`` (the config file's directory) if given."""
    value = sec.get(key)
    if value is None:
        return default
    return check_path(sec, key, value, base)


def check_path(sec: Section, key: str, value: object, base: Path | None) -> Path:
    text = check_str(sec, key, value, None, "")
    if "\0" in text:
        raise sec.error(key, "must not contain a NUL character")
    path = Path(text)
    if base is not None and not path.is_absolute():
        path = base / path
    return path


def check_range(
    sec: Section,
    key: str,
    value: float,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    unit: str = "",
) -> None:
    if gt is not None and not value > gt:
        raise sec.error(key, f"must be > {num(gt)}{unit}, got {num(value)}{unit}")
    if ge is not None and not value >= ge:
        raise sec.error(key, f"must be ≥ {num(ge)}{unit}, got {num(value)}{unit}")
    if le is not None and not value <= le:
        raise sec.error(key, f"must be ≤ {num(le)}{unit}, got {num(value)}{unit}")


def num(value: float) -> str:
    """1, 0.5, 65536 — not 1.0 or 6.5536e+04."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
