"""AT replies of 3GPP TS 27.007 / ITU-T V.250 modems: the framer and the status parsers.

Pure: bytes in, values out; no I/O (the driver is :mod:`agent.devices.at_modem`).

The wire, with ``ATV1`` (verbose result codes)::

    host:  AT+CSQ\\r
    modem: AT+CSQ\\r                  the echo, until ATE0
           \\r\\n+CSQ: 18,99\\r\\n        information lines
           \\r\\nOK\\r\\n                 one final result code: OK, ERROR,
                                       +CME ERROR: <n|text>, +CMS ERROR: …

Unsolicited result codes (``RING``, ``+CREG: 1``, ``^RSSI: 17``) may arrive
at any time, also between the lines of an answer: a parser picks the lines
it asked for by their prefix and shape, never by position.

:func:`find_response` is the frame finder for
:meth:`~agent.devices.serial_link.SerialLink.read_frame`: the length of the
first complete answer (through its final result code), ``None`` while one
is still arriving, or :class:`AtError` when the bytes cannot be AT text
(control characters, invalid UTF-8, a line over :data:`MAX_LINE` bytes, or
:data:`MAX_RESPONSE` bytes without a final result code). The parsers take a
:class:`Response` and raise only :class:`AtError`.

Errors::

    DeviceError
     └── DeviceProtocolError
          └── AtError      not AT text, or a reply that does not parse
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Final

from .base import DeviceProtocolError

#: The longest line accepted, in bytes.
MAX_LINE: Final = 512
#: The most bytes accepted before the final result code.
MAX_RESPONSE: Final = 4096

#: 27.007 <stat> of +CREG/+CGREG/+CEREG → the ``registration`` attribute.
REGISTRATION: Final[dict[int, str]] = {
    0: "not_registered",
    1: "home",
    2: "searching",
    3: "denied",
    4: "unknown",
    5: "roaming",
    6: "home_sms_only",
    7: "roaming_sms_only",
    8: "emergency_only",
    9: "home_csfb_not_preferred",
    10: "roaming_csfb_not_preferred",
    11: "attached_rlos",
}
HOME: Final = frozenset({1, 6, 9})
ROAMING: Final = frozenset({5, 7, 10})

#: 27.007 <AcT> (+COPS, +CREG) → the ``access_technology`` attribute.
ACCESS_TECHNOLOGY: Final[dict[int, str]] = {
    0: "GSM",
    1: "GSM Compact",
    2: "UMTS",
    3: "EDGE",
    4: "HSDPA",
    5: "HSUPA",
    6: "HSPA",
    7: "LTE",
    8: "EC-GSM-IoT",
    9: "NB-IoT",
    10: "LTE (5GC)",
    11: "5G NR",
    12: "5G NG-RAN",
    13: "LTE + 5G NR",
}

#: +CME ERROR codes and texts (27.007 §9.2) that answer AT+CPIN? → the ``sim`` attribute.
SIM_ERRORS: Final[dict[str, str]] = {
    "5": "ph_sim_pin",
    "10": "not_inserted",
    "11": "sim_pin",
    "12": "sim_puk",
    "13": "failure",
    "14": "busy",
    "15": "wrong",
    "17": "sim_pin2",
    "18": "sim_puk2",
    "PH-SIM PIN REQUIRED": "ph_sim_pin",
    "SIM NOT INSERTED": "not_inserted",
    "SIM PIN REQUIRED": "sim_pin",
    "SIM PUK REQUIRED": "sim_puk",
    "SIM FAILURE": "failure",
    "SIM BUSY": "busy",
    "SIM WRONG": "wrong",
    "SIM PIN2 REQUIRED": "sim_pin2",
    "SIM PUK2 REQUIRED": "sim_puk2",
}

_ERROR_FINALS: Final = frozenset({"ERROR", "COMMAND NOT SUPPORT"})
_ERROR_PREFIXES: Final = ("+CME ERROR:", "+CMS ERROR:", "MODEM ERROR:")
#: Unsolicited codes without a ``prefix:`` (V.250 ring and call progress, Quectel's boot "RDY").
_URC_WORDS: Final = frozenset({"RING", "NO CARRIER", "BUSY", "NO ANSWER", "NO DIALTONE", "RDY"})
_EOL: Final = re.compile(rb"[\r\n]")
_NUMBER: Final = re.compile(r"[0-9]{1,6}")


class AtError(DeviceProtocolError):
    """The modem's bytes are not AT text, or a reply does not parse."""


# -- framing ------------------------------------------------------------------


def is_final(line: str) -> bool:
    """Whether ``line`` (stripped) is a final result code."""
    return line == "OK" or line in _ERROR_FINALS or line.startswith(_ERROR_PREFIXES)


def is_unsolicited(line: str) -> bool:
    """Whether ``line`` looks like an unsolicited code (``RING``, ``+CREG: 1``, ``^RSSI: 9``)."""
    return line in _URC_WORDS or (line[:1] in ("+", "^") and ":" in line)


def _text(piece: bytes, *, complete: bool) -> str:
    try:
        if complete:
            text = piece.decode("utf-8")
        else:  # a multi-byte character may be cut at the end
            text = codecs.getincrementaldecoder("utf-8")().decode(piece, final=False)
    except UnicodeDecodeError:
        raise AtError(f"not AT text: {piece[:24]!r}") from None
    if any(ch < " " and ch != "\t" for ch in text):
        raise AtError(f"control characters in the answer: {piece[:24]!r}")
    return text


def find_response(buffer: bytes) -> int | None:
    """The length of the first complete answer in ``buffer``, or None while it is incomplete.

    The answer ends with the first CR or LF after its final result code, so
    that the frames are the same however the bytes arrive (the LF of a CR LF
    starts the next frame, where blank lines mean nothing). Raises
    :class:`AtError` when the bytes cannot be an AT answer.
    """
    start = 0
    while True:
        match = _EOL.search(buffer, start)
        if match is None:
            tail = buffer[start:]
            if len(tail) > MAX_LINE:
                raise AtError(f"a line longer than {MAX_LINE} bytes: {tail[:24]!r}")
            _text(tail, complete=False)
            if len(buffer) > MAX_RESPONSE:
                raise AtError(f"no final result code in {len(buffer)} bytes")
            return None
        end = match.start()
        if end - start > MAX_LINE:
            raise AtError(f"a line longer than {MAX_LINE} bytes: {buffer[start : start + 24]!r}")
        line = _text(buffer[start:end], complete=True).strip()
        start = end + 1
        if is_final(line):
            return start


class ResponseFramer:
    """Bytes in, complete answers out (as bytes), for a stream read in any pieces."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames = []
        while (size := find_response(bytes(self._buffer))) is not None:
            frames.append(bytes(self._buffer[:size]))
            del self._buffer[:size]
        return frames


@dataclass(frozen=True, slots=True)
class Response:
    """One answer: its lines without the echo and blank lines, and the final result code."""

    command: str
    lines: tuple[str, ...]
    final: str

    @property
    def ok(self) -> bool:
        return self.final == "OK"

    @property
    def error(self) -> str | None:
        """``None`` for OK; the code or text of ``+CME ERROR: x``; else the final code itself."""
        if self.ok:
            return None
        for prefix in _ERROR_PREFIXES:
            if self.final.startswith(prefix):
                return self.final[len(prefix) :].strip()
        return self.final

    def info(self, prefix: str) -> list[str]:
        """The values of the lines starting ``prefix:`` (``+CSQ``), in order."""
        head = prefix.upper() + ":"
        return [ln[len(head) :].strip() for ln in self.lines if ln[: len(head)].upper() == head]


def parse_response(frame: bytes, command: str) -> Response:
    """One answer (as :func:`find_response` delimits it) to ``command`` (``"AT+CSQ"``)."""
    texts = [t for ln in _EOL.split(frame) if (t := _text(ln, complete=True).strip())]
    if not texts or not is_final(texts[-1]):
        raise AtError(f"no final result code in {frame[:40]!r}")
    if any(is_final(t) for t in texts[:-1]):
        raise AtError(f"two final result codes in {frame[:40]!r}")
    echo = command.strip().upper()
    body = tuple(t for t in texts[:-1] if t.upper() != echo)
    return Response(command, body, texts[-1])


# -- fields -------------------------------------------------------------------


def split_fields(value: str) -> list[str]:
    """Comma-separated fields, commas inside quotes kept; each field stripped of spaces."""
    fields: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            fields.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    fields.append("".join(current).strip())
    return fields


def unquote(field: str) -> str:
    return field[1:-1] if len(field) >= 2 and field[0] == field[-1] == '"' else field


def is_number(field: str) -> bool:
    """An unquoted decimal (leading zeros allowed, as Iridium's ``+CREG:002,001``)."""
    return _NUMBER.fullmatch(field) is not None


def number(field: str, what: str) -> int:
    if not is_number(field):
        raise AtError(f"{what} is not a number: {field[:24]!r}")
    return int(field)


# -- the replies a poll reads --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signal:
    """``+CSQ: <rssi>,<ber>``; 99 is "not known"."""

    rssi: int
    ber: int

    @property
    def dbm(self) -> int | None:
        """0 → −113 (or less), 1…30 → −111…−53, 31 → −51 (or more); TD-SCDMA 100…191 → −116…−25."""
        if self.rssi <= 31:
            return -113 + 2 * self.rssi
        if 100 <= self.rssi <= 191:
            return self.rssi - 216
        return None


def parse_csq(resp: Response) -> Signal:
    if not resp.ok:
        raise AtError(f"{resp.command} failed: {resp.final}")
    values = resp.info("+CSQ")
    if not values:
        raise AtError(f"no +CSQ line in the answer to {resp.command}")
    fields = split_fields(values[-1])
    if len(fields) != 2:
        raise AtError(f"+CSQ needs <rssi>,<ber>: {values[-1][:40]!r}")
    rssi, ber = number(fields[0], "rssi"), number(fields[1], "ber")
    if not (rssi <= 31 or rssi == 99 or 100 <= rssi <= 191):
        raise AtError(f"rssi {rssi} is out of range")
    if not (ber <= 7 or ber == 99):
        raise AtError(f"ber {ber} is out of range")
    return Signal(rssi, ber)


@dataclass(frozen=True, slots=True)
class Registration:
    """The solicited ``+CREG: <n>,<stat>[,<lac>,<ci>[,<AcT>]]`` (or +CEREG)."""

    stat: int
    act: int | None = None

    @property
    def name(self) -> str:
        return REGISTRATION.get(self.stat, "unknown")


def parse_registration(resp: Response, prefix: str) -> Registration | None:
    """The solicited reply to ``AT+CREG?`` (``prefix="+CREG"``); None if the command failed.

    Unsolicited codes share the prefix. The solicited reply starts with two
    unquoted numbers ``<n>,<stat>`` (n ≤ 5); the unsolicited one has only
    ``<stat>`` or ``<stat>,"<lac>",…``. If several lines fit, the last one
    before the final result code is the reply (modems send queued codes first).
    """
    if not resp.ok:
        return None
    fits = [
        fields
        for value in resp.info(prefix)
        if len(fields := split_fields(value)) >= 2
        and is_number(fields[0])
        and is_number(fields[1])
        and int(fields[0]) <= 5
    ]
    if not fits:
        raise AtError(f"no solicited {prefix} <n>,<stat> line in the answer to {resp.command}")
    fields = fits[-1]
    # <AcT> is the fifth field for n=2 (5 fields), n=3 (7) and n=4/5 (9, 11).
    act = int(fields[4]) if len(fields) in (5, 7, 9, 11) and is_number(fields[4]) else None
    return Registration(int(fields[1]), act)


@dataclass(frozen=True, slots=True)
class Operator:
    """``+COPS: <mode>[,<format>,<oper>[,<AcT>]]``; a bare ``+COPS: <mode>`` means none."""

    mode: int | None = None
    name: str | None = None
    act: int | None = None


def parse_cops(resp: Response) -> Operator:
    if not resp.ok:  # e.g. +CME ERROR: 10 without a SIM
        return Operator()
    values = resp.info("+COPS")
    if not values:
        raise AtError(f"no +COPS line in the answer to {resp.command}")
    fields = split_fields(values[-1])
    mode = number(fields[0], "the +COPS mode")
    name = unquote(fields[2]).strip() if len(fields) >= 3 else ""
    act = number(fields[3], "the +COPS AcT") if len(fields) >= 4 and fields[3] else None
    return Operator(mode, name[:64] or None, act)


def parse_cpin(resp: Response) -> str:
    """The SIM's state: ``ready``, ``sim_pin``, ``not_inserted``, … (see :data:`SIM_ERRORS`)."""
    if not resp.ok:
        code = (resp.error or "").upper()
        return SIM_ERRORS.get(code.lstrip("0") or code, "error")
    values = resp.info("+CPIN") or [ln for ln in resp.lines if not is_unsolicited(ln)]
    if not values:
        raise AtError(f"no +CPIN line in the answer to {resp.command}")
    code = unquote(values[-1]).strip()
    name = re.sub(r"[^a-z0-9]+", "_", code.lower()).strip("_")[:32]
    if not name:
        raise AtError(f"an empty SIM state in {values[-1][:40]!r}")
    return name


def parse_text(resp: Response, prefix: str) -> str | None:
    """The one-line answer to AT+CGMI/CGMM/CGMR (``prefix`` ``+CGMI``); None on an error."""
    if not resp.ok:
        return None
    tagged = resp.info(prefix)
    values = tagged or [ln for ln in resp.lines if not is_unsolicited(ln)]
    if not values:
        return None
    return unquote(values[0]).strip()[:64] or None
