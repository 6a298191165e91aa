"""ESC/POS receipt printers (Epson TM and compatibles) over a serial port: kind ``escpos_printer``.

What it reads: the real-time status, ``DLE EOT n`` (request ``10 04 n``, the
reply is exactly one byte) for n = 1 (printer), 2 (offline cause), 3 (error
cause) and 4 (roll-paper sensor), asked one after the other. Every reply byte
must match ``0xx1xx10`` — ``(b & 0x93) == 0x12`` — or the poll fails with an
:class:`EscposError` that names the byte and the query.

Flags, in this order:

| flag | from | meaning | state |
|---|---|---|---|
| ``offline`` | n=1 bit 3 | the printer does not accept data | fault |
| ``cover_open`` | n=2 bit 2 | the printer cover is open | fault |
| ``paper_near_end`` | n=4 bits 2+3 | the roll is nearly used up | warning |
| ``paper_end`` | n=4 bits 5+6, n=2 bit 5 | no paper | fault |
| ``cutter_error`` | n=3 bit 3 | the autocutter is jammed or failed | fault |
| ``unrecoverable_error`` | n=3 bit 5 | a hardware failure | fault |
| ``auto_recoverable_error`` | n=3 bit 6 | e.g. print head too hot; clears by itself | fault |

Either bit of a two-bit sensor field sets the flag. State: ``ok`` with no
flag, ``warning`` when ``paper_near_end`` is the only one, else ``fault``.
The reason names the worst causes in plain words ("paper end — replace the
roll"); ``offline`` is named only when no other flag explains it.

Attributes: ``status_bytes`` (the four replies in hex, e.g. ``"1a 32 12 7e"``),
``drawer_pin3_high`` (n=1 bit 2: the drawer-kick connector's pin 3, whose
meaning depends on the drawer), ``paper_feeding`` (n=2 bit 3: paper is being
fed with the FEED button), ``error_occurred`` (n=2 bit 6) and
``recoverable_error`` (n=3 bit 2: a model-specific mechanical or black-mark
error). The model-dependent bits 5 and 6 of n=1 are not read.

Options: none (the common keys only; the default baud rate is 9600).

Errors: the port missing or vanishing → ``DeviceGone``; held by another
process → ``DevicePortBusy``; no reply to a query within ``timeout_s`` →
``DeviceSilent`` naming the query (a printer that answers n=1 but not n=4
does not support that query); a reply byte that is not a status byte →
``EscposError``. Printers answer ``DLE EOT`` even while offline, so silence
means a dead link, a wrong baud rate or a printer switched off.

The printer honours ``DLE EOT`` even inside other data (a bit image), so the
driver must own the port: it opens it exclusively and must not be pointed at
a port another program prints through.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

from protocol.fields import Scalar

from .base import DeviceProtocolError, DeviceSilent, DeviceSpec, DeviceState, DriverKind, Reading
from .serial_link import SerialLink

if TYPE_CHECKING:
    from ..configkit import Section

DLE: Final = 0x10
EOT: Final = 0x04
#: The status queries, in the order they are asked.
QUERIES: Final = (1, 2, 3, 4)
#: What each query asks, for messages.
QUERY_NAMES: Final[dict[int, str]] = {
    1: "printer status",
    2: "offline cause",
    3: "error cause",
    4: "roll-paper sensor",
}
#: A status byte is 0xx1xx10: these bits are fixed ...
FIXED_MASK: Final = 0x93
#: ... to these values.
FIXED_BITS: Final = 0x12

FLAGS: Final = (
    "offline",
    "cover_open",
    "paper_near_end",
    "paper_end",
    "cutter_error",
    "unrecoverable_error",
    "auto_recoverable_error",
)

#: Plain words for each flag, for reasons.
WORDS: Final[dict[str, str]] = {
    "paper_end": "paper end — replace the roll",
    "cover_open": "cover open — close the printer cover",
    "cutter_error": "cutter error — open the cover, clear the jammed paper and close it",
    "unrecoverable_error": "unrecoverable error — switch the printer off and on; "
    "if it persists, call for service",
    "auto_recoverable_error": "temporary error (e.g. print head too hot) — "
    "wait a moment, it clears by itself",
    "offline": "offline — the printer is not accepting data",
    "paper_near_end": "paper near end — have a new roll ready",
}
#: Offline with a cause that has no flag of its own.
_OFFLINE_FEEDING: Final = "offline — paper is being fed with the FEED button"
_OFFLINE_RECOVERABLE: Final = (
    "offline — recoverable error (e.g. a paper jam); clear it and close the cover"
)
#: The order in which causes are named in a reason, worst first.
_REASON_ORDER: Final = (
    "paper_end",
    "cover_open",
    "cutter_error",
    "unrecoverable_error",
    "auto_recoverable_error",
)


class EscposError(DeviceProtocolError):
    """The printer answered a status query with something that is not a status byte."""


def status_request(n: int) -> bytes:
    """``DLE EOT n``: the real-time status query ``n`` (1–4)."""
    if n not in QUERIES:
        raise ValueError(f"DLE EOT {n} is not a status query this driver asks")
    return bytes((DLE, EOT, n))


def check_reply(n: int, byte: int) -> int:
    """``byte`` if it is a valid reply to ``DLE EOT n``; else :class:`EscposError`."""
    if byte & FIXED_MASK != FIXED_BITS:
        raise EscposError(
            f"0x{byte:02x} in answer to DLE EOT {n} ({QUERY_NAMES[n]}) is not a status byte"
        )
    return byte


class StatusFramer:
    """Bytes in, readings out: the replies to DLE EOT 1, 2, 3, 4, one byte each, in order.

    Each byte is checked as it arrives; every fourth completes a reading.
    After an :class:`EscposError` the framer starts over with the reply to n=1.
    """

    def __init__(self) -> None:
        self._got = bytearray()

    @property
    def expecting(self) -> int:
        """The query whose reply comes next."""
        return QUERIES[len(self._got)]

    @property
    def pending(self) -> int:
        """How many replies of an unfinished reading are held."""
        return len(self._got)

    def feed(self, data: bytes) -> list[Reading]:
        readings = []
        for byte in data:
            try:
                self._got.append(check_reply(self.expecting, byte))
            except EscposError:
                self._got.clear()
                raise
            if len(self._got) == len(QUERIES):
                s1, s2, s3, s4 = self._got
                self._got.clear()
                readings.append(decode(s1, s2, s3, s4))
        return readings


def parse_status(replies: bytes) -> Reading:
    """The reading from exactly four replies (to n = 1, 2, 3, 4), else :class:`EscposError`."""
    if len(replies) != len(QUERIES):
        raise EscposError(f"expected {len(QUERIES)} status bytes, got {len(replies)}")
    framer = StatusFramer()
    (reading,) = framer.feed(replies)
    return reading


def decode(s1: int, s2: int, s3: int, s4: int) -> Reading:
    """The reading from four status bytes already checked by :func:`check_reply`."""
    on = {
        "offline": bool(s1 & 0x08),
        "cover_open": bool(s2 & 0x04),
        "paper_near_end": bool(s4 & 0x0C),
        "paper_end": bool(s4 & 0x60) or bool(s2 & 0x20),
        "cutter_error": bool(s3 & 0x08),
        "unrecoverable_error": bool(s3 & 0x20),
        "auto_recoverable_error": bool(s3 & 0x40),
    }
    flags = tuple(f for f in FLAGS if on[f])
    attributes: Mapping[str, Scalar] = {
        "status_bytes": " ".join(f"{b:02x}" for b in (s1, s2, s3, s4)),
        "drawer_pin3_high": bool(s1 & 0x04),
        "paper_feeding": bool(s2 & 0x08),
        "error_occurred": bool(s2 & 0x40),
        "recoverable_error": bool(s3 & 0x04),
    }
    state = printer_state(flags)
    reason = printer_reason(flags, attributes) if state != "ok" else None
    return Reading(state=state, flags=flags, attributes=attributes, reason=reason)


def printer_state(flags: tuple[str, ...]) -> DeviceState:
    if not flags:
        return "ok"
    if flags == ("paper_near_end",):
        return "warning"
    return "fault"


def printer_reason(flags: tuple[str, ...], attributes: Mapping[str, Scalar]) -> str | None:
    """The causes in words, worst first; None when all is well."""
    words = [WORDS[f] for f in _REASON_ORDER if f in flags]
    if "offline" in flags and not words:
        if attributes.get("paper_feeding"):
            words.append(_OFFLINE_FEEDING)
        elif attributes.get("recoverable_error"):
            words.append(_OFFLINE_RECOVERABLE)
        else:
            words.append(WORDS["offline"])
    if "paper_near_end" in flags and "paper_end" not in flags:
        words.append(WORDS["paper_near_end"])
    return "; ".join(words) or None


# -- the driver ---------------------------------------------------------------


class EscposPrinterDriver:
    """Polls one printer: DLE EOT 1..4, one query at a time, each reply within ``timeout_s``."""

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self._link = SerialLink(spec.port, baudrate=spec.baudrate)

    async def poll(self) -> Reading:
        """The four queries in one write, the four one-byte replies in one read.

        Printers answer real-time commands in order and accept up to eight
        outstanding, so one round trip does what four would; a missing reply
        is named by the query it belongs to.
        """
        link = self._link
        link.open()  # a no-op while open; after DeviceGone it finds the device again
        link.discard_input()  # a late reply to an earlier poll must not count
        await link.write(b"".join(status_request(n) for n in QUERIES))
        try:
            replies = await link.read_exact(len(QUERIES), self.spec.timeout_s)
        except DeviceSilent as err:
            got = len(link.pending())
            raise DeviceSilent(_silence(QUERIES[got], self.spec.timeout_s)) from err
        readings = StatusFramer().feed(replies)
        return readings[0]

    async def close(self) -> None:
        self._link.close()


def _silence(n: int, timeout_s: float) -> str:
    if n == QUERIES[0]:
        return f"no answer to DLE EOT {n} ({QUERY_NAMES[n]}) within {timeout_s:g} s"
    return (
        f"no answer to DLE EOT {n} ({QUERY_NAMES[n]}) within {timeout_s:g} s, though the "
        f"printer answered DLE EOT 1; this model may not support it"
    )


def parse_options(sec: Section, base: Path) -> None:
    """The printer has no keys of its own."""
    return None


KIND: Final = DriverKind(
    name="escpos_printer",
    create=EscposPrinterDriver,
    parse_options=parse_options,
    default_baudrate=9600,
)
