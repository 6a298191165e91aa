"""The ``[payments]`` table of the agent's config.

::

    [payments]
    timeout_s = 60          # a payment not ended by then is a timeout, in doubt
    technical_codes = ["68", "91", "96", "98"]   # infrastructure, not cardholder declines
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..configkit import Section, opt_float

DEFAULT_TECHNICAL_CODES = ("68", "91", "96", "98")


@dataclass(frozen=True, slots=True)
class PaymentsSettings:
    timeout_s: float = 60.0
    technical_codes: tuple[str, ...] = DEFAULT_TECHNICAL_CODES


def parse_payments(sec: Section, base: Path) -> PaymentsSettings:
    codes = sec.get("technical_codes")
    if codes is None:
        technical = DEFAULT_TECHNICAL_CODES
    elif not isinstance(codes, list) or not all(
        isinstance(c, str) and 1 <= len(c) <= 8 and c.isascii() and c.isalnum() for c in codes
    ):
        raise sec.error("technical_codes", 'expected a list of response codes such as ["91", "96"]')
    else:
        technical = tuple(codes)
    return PaymentsSettings(
        timeout_s=opt_float(sec, "timeout_s", 60.0, ge=1, le=86400),
        technical_codes=technical,
    )
