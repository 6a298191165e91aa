"""What a POS may say about a payment, checked and normalised.

:func:`parse_submission` turns the fields of one ``POST /v1/txn`` body (or of
one log line's named groups) into a :class:`Submission`, or raises
:class:`PaymentError` naming the field, with nothing stored. The PAN guard
comes first: a field whose *name* says pan/track/cvv/pin refuses the whole
request (422); card numbers in text are masked before anything else looks at
the text. Values arrive as JSON values or, from log files, as strings:
``"1250"`` is as good an ``amount_minor`` as ``1250``.

Error messages name the field and what was expected, never the value (it
could hold a card number).

Errors::

    PaymentError        field, reason, status (400 bad input, 422 card data,
                        404 unknown payment, 409 conflict, 503 spool failing)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

import orjson

from protocol import format_datetime

KINDS: Final = ("sale", "refund", "void", "reversal")
OUTCOMES: Final = ("approved", "declined", "timeout", "error")
RESOLUTIONS: Final = ("reversed", "charged", "not_charged")
#: Twelve digits of minor units (9,999,999,999.99 in a two-decimal currency):
#: more is no till's amount — and a 13–19 digit number may be a card number.
AMOUNT_MAX: Final = 10**12 - 1
MESSAGE_MAX: Final = 512

Value = str | int


class PaymentError(Exception):
    """A payment report refused: which field (None for the whole body), why, and the
    HTTP status the local API answers with."""

    def __init__(self, field: str | None, reason: str, *, status: int = 400) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason
        self.status = status


class Guard(Protocol):
    """What the intake needs of :class:`agent.pan_guard.PanGuard`."""

    def scrub(self, text: str) -> tuple[str, int]: ...

    def forbidden_fields(self, names: list[str]) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Submission:
    """One report about one payment: a start (no ``outcome``), or an end (with
    ``outcome``, and possibly the start's fields too)."""

    txn_id: str
    #: the fields given, normalised; times as RFC 3339 UTC strings
    values: Mapping[str, Value]
    #: card numbers and track data the guard masked in this report
    masked: int = 0

    @property
    def is_end(self) -> bool:
        return "outcome" in self.values

    @property
    def digest(self) -> str:
        """Identifies the content: the same report posted twice has the same digest."""
        doc = orjson.dumps([self.txn_id, self.values], option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(doc).hexdigest()[:32]


# -- the readers, one per field --------------------------------------------------


def _text(name: str, max_len: int) -> Callable[[object], str]:
    def read(value: object) -> str:
        if not isinstance(value, str):
            raise PaymentError(name, f"expected a string, got {_type(value)}")
        if len(value) > max_len:
            raise PaymentError(name, f"longer than {max_len} characters")
        return value

    return read


def _choice(name: str, options: tuple[str, ...]) -> Callable[[object], str]:
    def read(value: object) -> str:
        if not isinstance(value, str):
            raise PaymentError(name, f"expected a string, one of {', '.join(options)}")
        if value not in options:
            raise PaymentError(name, f"must be one of {', '.join(options)}")
        return value

    return read


def _message(value: object) -> str:
    if not isinstance(value, str):
        raise PaymentError("message", f"expected a string, got {_type(value)}")
    return value if len(value) <= MESSAGE_MAX else value[: MESSAGE_MAX - 1] + "…"


def _amount(value: object) -> int:
    if isinstance(value, str) and value.isascii() and value.lstrip("-").isdigit():
        value = int(value)
    if type(value) is not int:
        raise PaymentError(
            "amount_minor", f"expected an integer number of minor units (cents), got {_type(value)}"
        )
    if value < 0:
        raise PaymentError("amount_minor", "must not be negative")
    if value > AMOUNT_MAX:
        raise PaymentError("amount_minor", f"larger than {AMOUNT_MAX} minor units")
    return value


_CURRENCY = re.compile(r"[A-Za-z]{3}")


def _currency(value: object) -> str:
    if not isinstance(value, str) or _CURRENCY.fullmatch(value) is None:
        raise PaymentError("currency", "expected an ISO 4217 code of three letters, like EUR")
    return value.upper()


_RFC3339 = re.compile(
    r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)", re.ASCII
)


def _timestamp(name: str) -> Callable[[object], str]:
    def read(value: object) -> str:
        match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise PaymentError(
                name, "expected an RFC 3339 timestamp with a time zone, like 2026-11-21T09:30:00Z"
            )
        date, time, fraction, zone = match.groups()
        text = f"{date}T{time}.{(fraction or '0')[:6]:0<6}{zone.upper()}"
        try:
            parsed = datetime.fromisoformat(text).astimezone(UTC)
        except (ValueError, OverflowError):
            raise PaymentError(name, "not a real date and time") from None
        return format_datetime(parsed)

    return read


READERS: Final[Mapping[str, Callable[[object], Value]]] = {
    "kind": _choice("kind", KINDS),
    "acquirer": _text("acquirer", 256),
    "amount_minor": _amount,
    "currency": _currency,
    "stan": _text("stan", 12),
    "rrn": _text("rrn", 12),
    "auth_code": _text("auth_code", 12),
    "response_code": _text("response_code", 8),
    "started_at": _timestamp("started_at"),
    "ended_at": _timestamp("ended_at"),
    "outcome": _choice("outcome", OUTCOMES),
    "message": _message,
}
#: Every field a report may carry.
FIELDS: Final = ("txn_id", *READERS)
_TXN_ID_MAX = 128


def parse_submission(data: Mapping[str, object], guard: Guard) -> Submission:
    """Check and normalise one report; raise :class:`PaymentError` naming the field."""
    names = [str(k) for k in data]
    refused = guard.forbidden_fields(names)
    if refused:
        shown = ", ".join(guard.scrub(name)[0] for name in refused)
        raise PaymentError(
            refused[0] if len(refused) == 1 else None,
            f"refused: field {shown} would carry card data (PAN, track data, CVV or PIN), "
            "which posmon never accepts",
            status=422,
        )
    for name in names:
        if name != "txn_id" and name not in READERS:
            shown = guard.scrub(name)[0][:64]
            raise PaymentError(shown, f"unknown field; the fields are {', '.join(FIELDS)}")
    masked = 0
    values: dict[str, Value] = {}
    txn_id: str | None = None
    for name, raw in data.items():
        if raw is None or raw == "":
            continue  # absent (a log rule's group that did not match, or JSON null)
        if isinstance(raw, str):
            _check_unicode(name, raw)
            raw, n = guard.scrub(raw)
            masked += n
        if name == "txn_id":
            if not isinstance(raw, str):
                raise PaymentError("txn_id", f"expected a string, got {_type(raw)}")
            if len(raw) > _TXN_ID_MAX:
                raise PaymentError("txn_id", f"longer than {_TXN_ID_MAX} characters")
            txn_id = raw
            continue
        values[name] = READERS[name](raw)
    if txn_id is None:
        raise PaymentError("txn_id", "required: the POS's own id of the payment")
    if "ended_at" in values and "outcome" not in values:
        raise PaymentError("outcome", "required with ended_at: how did the payment end?")
    started, ended = values.get("started_at"), values.get("ended_at")
    if isinstance(started, str) and isinstance(ended, str) and ended < started:
        raise PaymentError("ended_at", "earlier than started_at")
    return Submission(txn_id=txn_id, values=values, masked=masked)


def parse_resolution(data: Mapping[str, object], guard: Guard) -> tuple[str, str]:
    """The ``txn_id`` and ``resolution`` of a ``POST /v1/txn/resolution`` body."""
    refused = guard.forbidden_fields([str(k) for k in data])
    if refused:
        raise PaymentError(None, "refused: card data is never accepted", status=422)
    for name in data:
        if name not in ("txn_id", "resolution"):
            shown = guard.scrub(str(name))[0][:64]
            raise PaymentError(shown, "unknown field; the fields are txn_id, resolution")
    txn_id = data.get("txn_id")
    if not isinstance(txn_id, str) or not txn_id:
        raise PaymentError("txn_id", "required: a string, the id of the payment in doubt")
    _check_unicode("txn_id", txn_id)
    txn_id = guard.scrub(txn_id)[0]
    if len(txn_id) > _TXN_ID_MAX:
        raise PaymentError("txn_id", f"longer than {_TXN_ID_MAX} characters")
    resolution = _choice("resolution", RESOLUTIONS)(data.get("resolution"))
    return txn_id, resolution


def _check_unicode(name: str, value: str) -> None:
    """A lone surrogate (``"\\ud800"`` is valid JSON) cannot be stored or sent as UTF-8."""
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise PaymentError(name, "not valid Unicode text") from None


def _type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
