"""The ``[[logfile]]`` tables of the agent's config: which files to follow, and
the rules that turn their lines into payment reports.

::

    [[logfile]]
    path = "/var/log/pos/payments.log"   # absolute, or relative to the config file
    encoding = "utf-8"        # undecodable bytes become U+FFFD and are counted
    poll_s = 0.5              # how often the file is looked at (stat, no inotify)
    start_at = "end"          # a file seen for the first time: "end" or "beginning"

    [[logfile.rule]]          # one rule per line shape; the first that matches wins
    pattern = 'START id=(?P<txn_id>\\S+) amount=(?P<amount_minor>\\d+) (?P<currency>[A-Z]{3})'

    [[logfile.rule]]
    pattern = '^(?P<ended_at>\\S+ \\S+) END id=(?P<txn_id>\\S+) result=(?P<outcome>\\w+)'
    outcome_map = { OK = "approved", DECL = "declined", TIMEOUT = "timeout" }
    time_format = "%Y-%m-%d %H:%M:%S"    # strptime; default RFC 3339
    timezone = "Europe/Berlin"            # for times without an offset; default UTC

    [[logfile.rule]]
    pattern = 'id=(?P<txn_id>\\S+) host not reachable'
    set = { outcome = "error", message = "acquirer host not reachable" }

A pattern is searched anywhere in the line (``re.search``; anchor it with
``^``), after the PAN guard has masked the line. A rule's named groups are
payment fields (:data:`FIELDS`); a group that did not take part, or matched
nothing, is left out; ``set`` adds constant fields. Every regex is compiled
when the config loads, so a mistake is a :class:`~agent.configkit.ConfigError`
naming ``logfile[0].rule[1].pattern``.
A group or a ``set`` key that would hold card data (pan, track, cvv, pin) is
refused: the agent never records a card number.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..configkit import (
    Section,
    check_path,
    kind,
    missing,
    opt_choice,
    opt_float,
    opt_str,
    reject_unknown,
    wrong_type,
)
from ..pan_guard import forbidden_fields

StartAt = Literal["end", "beginning"]
_START_AT: Final[tuple[StartAt, ...]] = get_args(StartAt)

#: The payment fields a rule may capture or set (those of ``POST /v1/txn``).
FIELDS: Final = (
    "txn_id",
    "kind",
    "acquirer",
    "amount_minor",
    "currency",
    "stan",
    "rrn",
    "auth_code",
    "response_code",
    "started_at",
    "ended_at",
    "outcome",
    "message",
)
OUTCOMES: Final = ("approved", "declined", "timeout", "error")
KINDS: Final = ("sale", "refund", "void", "reversal")
TIME_FIELDS: Final = ("started_at", "ended_at")

_MAX_PATTERN = 4096


@dataclass(frozen=True, slots=True)
class LogRule:
    """One line shape: a regex whose named groups are payment fields."""

    pattern: re.Pattern[str]
    set: Mapping[str, str | int] = field(default_factory=lambda: MappingProxyType({}))
    outcome_map: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    time_format: str | None = None  # strptime format of started_at / ended_at; None = RFC 3339
    timezone: tzinfo = UTC  # for times that carry no offset

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self.pattern.groupindex)


@dataclass(frozen=True, slots=True)
class LogFileSpec:
    path: Path
    encoding: str = "utf-8"
    poll_s: float = 0.5
    start_at: StartAt = "end"
    rules: tuple[LogRule, ...] = ()


def parse_logfiles(root: Section, base: Path) -> tuple[LogFileSpec, ...]:
    items = root.get("logfile")
    if items is None:
        return ()
    if not isinstance(items, list):
        raise root.error("logfile", f"expected [[logfile]] tables, got {kind(items)}")
    specs: list[LogFileSpec] = []
    seen: dict[Path, int] = {}
    for index, item in enumerate(items):
        name = f"logfile[{index}]"
        if not isinstance(item, dict):
            raise root.error(name, f"expected a [[logfile]] table, got {kind(item)}")
        sec = Section(root.file, name, item)
        spec = _parse_logfile(sec, base)
        reject_unknown(sec)
        if spec.path in seen:
            other = seen[spec.path]
            raise sec.error("path", f"{spec.path} is already followed by logfile[{other}]")
        seen[spec.path] = index
        specs.append(spec)
    return tuple(specs)


def _parse_logfile(sec: Section, base: Path) -> LogFileSpec:
    raw_path = sec.get("path")
    if raw_path is None:
        raise missing(sec, "path")
    path = Path(_normpath(check_path(sec, "path", raw_path, base)))
    encoding = opt_str(sec, "encoding", "utf-8")
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise sec.error("encoding", f"unknown encoding {encoding!r}") from None
    try:
        ascii_compatible = "\n".encode(info.name) == b"\n" and b"\n".decode(info.name) == "\n"
    except (UnicodeError, LookupError, TypeError):
        ascii_compatible = False
    if not ascii_compatible:
        raise sec.error(
            "encoding",
            f"{encoding!r} cannot be read line by line (lines end at the byte \\n); "
            "use an ASCII-compatible encoding such as utf-8, latin-1 or cp1252",
        )
    poll_s = opt_float(sec, "poll_s", 0.5, ge=0.01, le=60)
    start_at = opt_choice(sec, "start_at", "end", _START_AT)
    rules = sec.get("rule")
    if rules is None:
        raise missing(sec, "rule", what="[[logfile.rule]] (at least one rule)")
    if not isinstance(rules, list) or not rules:
        raise sec.error("rule", f"expected [[{sec.name}.rule]] tables, got {kind(rules)}")
    parsed = []
    for index, rule in enumerate(rules):
        name = f"rule[{index}]"
        if not isinstance(rule, dict):
            raise sec.error(name, f"expected a [[logfile.rule]] table, got {kind(rule)}")
        rule_sec = Section(sec.file, sec.dotted(name), rule)
        parsed.append(_parse_rule(rule_sec))
        reject_unknown(rule_sec)
    return LogFileSpec(
        path=path,
        encoding=info.name,
        poll_s=poll_s,
        start_at=start_at,
        rules=tuple(parsed),
    )


def _normpath(path: Path) -> str:
    # One spelling per file, so that the checkpoint key does not change with "./".
    return os.path.normpath(os.path.abspath(path))


def _check_names(sec: Section, key: str, names: list[str], what: str) -> None:
    refused = forbidden_fields(names)
    if refused:
        raise sec.error(
            key,
            f"{what} {refused[0]!r} would hold card data (PAN, track data, CVV or PIN); "
            "the agent never records them — remove it",
        )
    for name in names:
        if name not in FIELDS:
            raise sec.error(
                key, f"{what} {name!r} is not a payment field; use one of {', '.join(FIELDS)}"
            )


def _parse_rule(sec: Section) -> LogRule:
    source = sec.get("pattern")
    if source is None:
        raise missing(sec, "pattern")
    if not isinstance(source, str):
        raise wrong_type(sec, "pattern", "a string (a regular expression)", source)
    if not source:
        raise sec.error("pattern", "must not be empty")
    if len(source) > _MAX_PATTERN:
        raise sec.error("pattern", f"must be at most {_MAX_PATTERN} characters")
    try:
        pattern = re.compile(source)
    except re.error as err:
        raise sec.error("pattern", f"invalid regular expression: {err}") from None
    except (OverflowError, RecursionError) as err:
        raise sec.error("pattern", f"invalid regular expression: {err}") from None
    groups = list(pattern.groupindex)
    _check_names(sec, "pattern", groups, "named group")
    constants = _parse_set(sec)
    both = sorted(set(groups) & set(constants))
    if both:
        raise sec.error("set", f"{both[0]!r} is both captured by the pattern and set; keep one")
    if "txn_id" not in groups:
        raise sec.error(
            "pattern",
            "must capture the payment's id in a named group (?P<txn_id>...): "
            "a line without it cannot be matched to a payment",
        )

    outcome_map = _parse_outcome_map(sec)
    if outcome_map and "outcome" not in groups:
        raise sec.error("outcome_map", "needs a named group (?P<outcome>...) in the pattern")

    time_format = opt_str(sec, "time_format", None)
    if time_format is not None:
        if not any(f in groups for f in TIME_FIELDS):
            raise sec.error(
                "time_format", "needs a named group (?P<started_at>...) or (?P<ended_at>...)"
            )
        _check_time_format(sec, time_format)
    zone_name = opt_str(sec, "timezone", None)
    zone: tzinfo = UTC
    if zone_name is not None and zone_name != "UTC":
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise sec.error(
                "timezone", f"unknown time zone {zone_name!r}; use a name like 'Europe/Berlin'"
            ) from None
    return LogRule(
        pattern=pattern,
        set=MappingProxyType(constants),
        outcome_map=MappingProxyType(outcome_map),
        time_format=time_format,
        timezone=zone,
    )


def _parse_set(sec: Section) -> dict[str, str | int]:
    table = sec.get("set")
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise wrong_type(sec, "set", 'a table such as { outcome = "timeout" }', table)
    _check_names(sec, "set", list(table), "field")
    out: dict[str, str | int] = {}
    for name, value in table.items():
        key = f"set.{name}"
        if name == "amount_minor" and isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise sec.error(key, f"must be ≥ 0, got {value}")
            out[name] = value
            continue
        if not isinstance(value, str) or not value:
            raise wrong_type(sec, key, "a non-empty string", value)
        if name == "outcome" and value not in OUTCOMES:
            raise sec.error(key, f"must be one of {', '.join(OUTCOMES)}, got {value!r}")
        if name == "kind" and value not in KINDS:
            raise sec.error(key, f"must be one of {', '.join(KINDS)}, got {value!r}")
        if name in TIME_FIELDS:
            raise sec.error(key, "a constant time makes no sense; capture it in the pattern")
        out[name] = value
    return out


def _parse_outcome_map(sec: Section) -> dict[str, str]:
    table = sec.get("outcome_map")
    if table is None:
        return {}
    if not isinstance(table, dict) or not table:
        raise wrong_type(sec, "outcome_map", 'a table such as { OK = "approved" }', table)
    out: dict[str, str] = {}
    for word, outcome in table.items():
        if outcome not in OUTCOMES:
            raise sec.error(
                f"outcome_map.{word}",
                f"must be one of {', '.join(OUTCOMES)}, got {outcome!r}",
            )
        out[word] = outcome
    return out


_SAMPLE = datetime(2026, 11, 21, 13, 4, 5, 123456)


def _check_time_format(sec: Section, fmt: str) -> None:
    if "%" not in fmt:
        raise sec.error(
            "time_format", f"expected a strptime format such as '%d.%m.%Y %H:%M:%S', got {fmt!r}"
        )
    try:
        datetime.strptime(_SAMPLE.strftime(fmt), fmt)
    except ValueError as err:
        raise sec.error("time_format", f"not a usable strptime format: {err}") from None
