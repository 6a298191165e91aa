"""WHEN arguments: an ISO 8601 time, or an age ("30m", "2h", "1d", "1w") before now."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from protocol import format_datetime

_AGE = re.compile(r"^\s*(\d{1,7})\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
HELP = (
    "an ISO 8601 time (2026-03-01T12:00Z; without an offset it is UTC) "
    "or an age before now: 45s, 30m, 2h, 1d, 1w"
)


def parse_when(text: str, now: datetime | None = None) -> str:
    """The API's ISO time for ``text``; raises ``ValueError`` saying what is accepted."""
    match = _AGE.match(text)
    if match is not None:
        amount, unit = int(match.group(1)), match.group(2)
        return format_datetime(
            (now or datetime.now(UTC)) - timedelta(seconds=amount * _UNIT_S[unit])
        )
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use {HELP}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return format_datetime(parsed)
