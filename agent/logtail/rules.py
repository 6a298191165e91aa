"""A log line (already through the PAN guard) → the fields of a payment report.

Pure: no I/O. :meth:`Rules.apply` tries the rules in order and returns the
fields of the first whose pattern is found in the line (``re.search``: a
rule may anchor itself with ``^``), or None when no rule matches. A line
whose captured time cannot be read raises :class:`LineError` naming the
field.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from .settings import LogRule

_YEAR_DIRECTIVES = ("%Y", "%y", "%G", "%c", "%x", "%s")


class LineError(Exception):
    """A matched line whose value cannot be used; nothing is submitted."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class Rules:
    """The rules of one log file, in order."""

    def __init__(
        self, rules: Sequence[LogRule], *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._rules = tuple(rules)
        self._searches = tuple(r.pattern.search for r in self._rules)
        self._now = now
        self.matched_by = [0] * len(self._rules)

    def apply(self, line: str) -> dict[str, str | int] | None:
        """The fields the first matching rule gives, or None if no rule matches."""
        for index, search in enumerate(self._searches):
            match = search(line)
            if match is None:
                continue
            self.matched_by[index] += 1
            rule = self._rules[index]
            fields: dict[str, str | int] = {
                k: v for k, v in match.groupdict().items() if v is not None and v != ""
            }
            if rule.set:
                fields.update(rule.set)
            if rule.outcome_map and "outcome" in fields:
                word = fields["outcome"]
                fields["outcome"] = rule.outcome_map.get(str(word), word)
            for name in ("started_at", "ended_at"):
                if name in fields:
                    fields[name] = self._time(rule, name, str(fields[name]))
            return fields
        return None

    def _time(self, rule: LogRule, name: str, text: str) -> str:
        """An RFC 3339 time with an offset (the rule's timezone when the log gives none)."""
        fmt = rule.time_format
        try:
            if fmt is None:
                stamp = datetime.fromisoformat(text)
            elif any(d in fmt for d in _YEAR_DIRECTIVES):
                stamp = datetime.strptime(text, fmt)
            else:
                stamp = self._without_year(rule, fmt, text)
        except ValueError:
            expected = "an RFC 3339 time" if fmt is None else f"a time in the format {fmt!r}"
            raise LineError(name, f"expected {expected}, got {text[:40]!r}") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=rule.timezone)
        return stamp.isoformat()

    def _without_year(self, rule: LogRule, fmt: str, text: str) -> datetime:
        """Syslog-style times carry no year: this year, or last year if that is ahead."""
        now = self._now().astimezone(rule.timezone)
        stamp = datetime.strptime(f"{now.year} {text}", f"%Y {fmt}")
        if stamp.replace(tzinfo=rule.timezone) > now + timedelta(days=1):
            stamp = datetime.strptime(f"{now.year - 1} {text}", f"%Y {fmt}")
        return stamp
