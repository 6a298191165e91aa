"""Query parameters of the read API: checked one by one, and keyset cursors.

Every endpoint declares the parameters it knows; anything else, a parameter
given twice, or a value that does not parse is a :class:`QueryError`, which
the routes answer with ``400 {"error": ..., "field": <param>}``.

A cursor is the sort key of the last item of a page, tagged with the list it
belongs to, as URL-safe base64 of JSON. The next page starts strictly after
that key (keyset pagination), so rows inserted meanwhile never shift a page
and nothing is skipped or repeated.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

from protocol import format_datetime
from protocol.errors import ProtocolError
from protocol.fields import parse_datetime

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
MAX_ID_LEN: Final = 128
MAX_CURSOR_LEN: Final = 1024

#: A sort key: strings and integers, in the order of the list's ORDER BY.
Key = tuple[str | int, ...]


class QueryError(ValueError):
    """A query parameter the API cannot use; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = f"{field}: {message}"


class Params:
    """The query string of one request, checked against the names an endpoint knows."""

    def __init__(self, query: Mapping[str, str], known: Collection[str]) -> None:
        # aiohttp's MultiDictProxy: getall() sees repeats; a plain mapping has none
        getall = getattr(query, "getall", None)
        for name in query:
            if name not in known:
                allowed = ", ".join(sorted(known)) or "none"
                raise QueryError(name, f"unknown parameter; this endpoint takes: {allowed}")
            if getall is not None and len(getall(name)) > 1:
                raise QueryError(name, "given more than once")
        self._query = query

    def text(self, name: str, *, max_len: int = MAX_ID_LEN) -> str | None:
        value = self._query.get(name)
        if value is None:
            return None
        if not value.strip():
            raise QueryError(name, "must not be empty")
        if len(value) > max_len:
            raise QueryError(name, f"longer than {max_len} characters")
        return value

    def choice(self, name: str, options: Sequence[str]) -> str | None:
        value = self._query.get(name)
        if value is None:
            return None
        if value not in options:
            raise QueryError(name, f"{value[:64]!r} is not one of {', '.join(options)}")
        return value

    def choices(self, name: str, options: Sequence[str]) -> tuple[str, ...] | None:
        """A comma-separated list of options (``kind=txn,probe_change``)."""
        value = self._query.get(name)
        if value is None:
            return None
        picked = tuple(part.strip() for part in value.split(","))
        for part in picked:
            if part not in options:
                raise QueryError(name, f"{part[:64]!r} is not one of {', '.join(options)}")
        return tuple(dict.fromkeys(picked))

    def boolean(self, name: str) -> bool | None:
        value = self._query.get(name)
        if value is None:
            return None
        if value not in ("true", "false"):
            raise QueryError(name, f"{value[:64]!r} is not true or false")
        return value == "true"

    def time(self, name: str) -> str | None:
        """An ISO 8601 time with a zone, as the stored ``ts`` strings are written (UTC, Z)."""
        value = self._query.get(name)
        if value is None:
            return None
        # a '+' in a query string arrives as a space when the client did not encode it
        candidate = value.strip().replace(" ", "+") if value.count(" ") == 1 else value
        try:
            return format_datetime(parse_datetime(candidate, name))
        except ProtocolError as err:
            raise QueryError(name, _time_problem(err.message, name)) from None

    def time_range(self) -> tuple[str | None, str | None]:
        since, until = self.time("since"), self.time("until")
        if since is not None and until is not None and since > until:
            raise QueryError("until", "is before since")
        return since, until

    def integer(self, name: str, *, default: int, low: int, high: int) -> int:
        value = self._query.get(name)
        if value is None:
            return default
        if not value.isascii() or not value.isdigit() or len(value) > 9:
            raise QueryError(name, f"{value[:64]!r} is not a whole number from {low} to {high}")
        number = int(value)
        if not low <= number <= high:
            raise QueryError(name, f"{number} is out of range; allowed {low}..{high}")
        return number

    def limit(self) -> int:
        return self.integer("limit", default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT)

    def cursor(self, tag: str, shape: Sequence[type]) -> Key | None:
        """The sort key a ``cursor`` parameter carries, for the list named ``tag``."""
        value = self._query.get("cursor")
        if value is None:
            return None
        if len(value) > MAX_CURSOR_LEN:
            raise QueryError("cursor", "too long; pass next_cursor exactly as it was given")
        return decode_cursor(value, tag, shape)


def _time_problem(message: str, name: str) -> str:
    text = message.removeprefix(f"{name}: ")
    return text + "; e.g. 2026-03-01T12:00:00Z"


def encode_cursor(tag: str, key: Key) -> str:
    raw = json.dumps([tag, *key], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(value: str, tag: str, shape: Sequence[type]) -> Key:
    bad = QueryError("cursor", "not a cursor of this list; pass next_cursor exactly as given")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        data: Any = json.loads(raw)
    except (binascii.Error, ValueError):
        raise bad from None
    if not isinstance(data, list) or len(data) != len(shape) + 1 or data[0] != tag:
        raise bad
    key: list[str | int] = []
    parts: list[Any] = data[1:]
    for part, kind in zip(parts, shape, strict=True):
        if type(part) is not kind:
            raise bad
        if isinstance(part, int) and not -(2**63) <= part < 2**63:
            raise bad
        if isinstance(part, str | int):
            key.append(part)
    return tuple(key)
