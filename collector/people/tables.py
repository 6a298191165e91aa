"""Plain-text tables and the small formatting every view shares.

A column is as wide as its widest cell, up to its ``max_width``; longer text
is clipped with "…". Numbers align right. No colour, no box drawing: the
output reads the same in a terminal, a pager, a log or an e-mail.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ELLIPSIS = "…"
NONE = "-"
GAP = 2  # spaces between columns
MIN_WIDTH = 8  # a text column is not narrowed below this to fit the terminal


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    max_width: int = 40
    right: bool = False  # align right (numbers)


def clip(text: str, width: int) -> str:
    """``text`` on one line, at most ``width`` characters (the last one "…" if cut)."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + ELLIPSIS


def terminal_width() -> int | None:
    """The terminal's width when stdout is one; ``None`` (no limit) for a pipe or a file."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def _fit(widths: list[int], columns: Sequence[Column], limit: int, gap: int) -> list[int]:
    """Narrow the widest text columns (not below MIN_WIDTH) until the row fits ``limit``."""
    widths = list(widths)
    while sum(widths) + gap * (len(widths) - 1) > limit:
        candidates = [i for i, col in enumerate(columns) if not col.right and widths[i] > MIN_WIDTH]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
    return widths


def table(
    columns: Sequence[Column],
    rows: Iterable[Sequence[str]],
    *,
    indent: str = "",
    width: int | None = None,
) -> str:
    """The rows under their headers, columns two spaces apart; "(none)" without rows.

    ``width``: fit the table into this many characters by clipping its widest text
    columns (default: the terminal's width when stdout is a terminal, else no limit).
    """
    cells = [
        [clip(cell, col.max_width) for cell, col in zip(row, columns, strict=True)] for row in rows
    ]
    if not cells:
        return f"{indent}(none)"
    widths = [
        max(len(col.header), *(len(row[i]) for row in cells)) for i, col in enumerate(columns)
    ]
    limit = width if width is not None else terminal_width()
    if limit is not None:
        widths = _fit(widths, columns, limit - len(indent), GAP)
    lines = []
    for row in [[col.header for col in columns], *cells]:
        parts = [
            clip(cell, size).rjust(size) if col.right else clip(cell, size).ljust(size)
            for cell, size, col in zip(row, widths, columns, strict=True)
        ]
        lines.append((indent + (" " * GAP).join(parts)).rstrip())
    return "\n".join(lines)


def text(value: Any) -> str:
    """A cell's text: "-" for a missing value."""
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def when(value: Any) -> str:
    """An API time as ``2026-03-01 12:00:05Z`` (UTC, to the second)."""
    parsed = parse_time(value)
    if parsed is None:
        return text(value)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def age(value: Any, now: datetime) -> str:
    """How long ago an API time was: ``45s ago``, ``12m ago``, ``3h ago``, ``2d ago``."""
    parsed = parse_time(value)
    if parsed is None:
        return NONE
    seconds = (now - parsed).total_seconds()
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def when_ago(value: Any, now: datetime) -> str:
    if parse_time(value) is None:
        return text(value)
    return f"{when(value)} ({age(value, now)})"


def percent(value: Any) -> str:
    return f"{value:g} %" if isinstance(value, int | float) else NONE


def millis(value: Any) -> str:
    return f"{value:g} ms" if isinstance(value, int | float) else NONE


#: ISO 4217 currencies whose minor unit is not 1/100
_EXPONENT = {
    **{code: 0 for code in ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW")},
    **{code: 0 for code in ("PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF")},
    **{code: 3 for code in ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND")},
}


def amount(minor: Any, currency: Any) -> str:
    """``12.50 EUR`` from an amount in minor units (``1250 JPY`` for yen)."""
    if not isinstance(minor, int) or isinstance(minor, bool):
        return NONE
    digits = _EXPONENT.get(str(currency), 2)
    return f"{minor / 10**digits:.{digits}f} {currency or ''}".rstrip()
