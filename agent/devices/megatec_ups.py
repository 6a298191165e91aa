"""Megatec/Q1 serial UPSes (``kind = "megatec_ups"``): status, ratings, identity.

Most small line-interactive UPSes sold for shop counters speak the Megatec
protocol (often called Q1 or "blazer") at 2400 bps 8N1; every message ends in
``\\r``. Each poll sends ``Q1\\r`` and reads the 47-byte status::

    (MMM.M NNN.N PPP.P QQQ RR.R S.SS TT.T b7b6b5b4b3b2b1b0\\r
    (230.0 230.0 230.0 025 50.0 13.6 25.0 00001001\\r

giving ``input_voltage``, ``input_fault_voltage`` (the last glitch),
``output_voltage``, ``load_pct`` (output current, % of the rating),
``frequency_hz``, ``battery_voltage`` (as sent: volts per cell ``S.SS`` on
on-line UPSes, volts ``SS.S`` on standby ones), ``temperature_c``,
``ups_type`` ("standby" when b3 is 1, else "online") and ``beeper`` (b0). A
field the UPS fills with ``@`` (unsupported) is left out.

Once per connection (the first poll, and the first after a replug) the
driver also asks ``F\\r`` for the ratings (``#230.0 004 12.00 50.0\\r``:
``rating_voltage``, ``rating_current_a``, ``rating_battery_voltage``,
``rating_frequency_hz``) and ``I\\r`` for the identity (``#`` company(15)
model(10) version(10): ``manufacturer``, ``model``, ``firmware``). A UPS that
echoes them back (the protocol's answer to an unknown command), does not
answer, or answers them in another layout simply lacks those attributes:
only Q1 decides the state.

Flags, in this order, from the status bits (see :mod:`.ups_state`):

| bit | flag | state |
|---|---|---|
| b7 utility fail | ``on_battery`` | warning |
| b6 battery low | ``battery_low`` | fault |
| b5 bypass/boost/buck | ``bypass_boost`` | warning |
| b4 UPS failed | ``ups_failed`` | fault |
| b2 test in progress | ``test_in_progress`` | warning |
| b1 shutdown active | ``shutdown_active`` | fault |

With ``bypass_boost`` the attribute ``regulation`` says which one, chosen
from output ÷ input voltage as NUT does: below 0.95 "trim", below 1.05
"bypass", below 1.5 "boost" (absent when the voltages make no sense).

States: "ok" (no flag), "warning", "fault"; the reason lists the flags in
plain words (:func:`.ups_state.ups_reason`). No options of its own; the
default baud rate is 2400.

Errors (:class:`MegatecError`, a :class:`DeviceProtocolError`), each with
the bytes received: "the UPS echoed Q1: it does not speak the Megatec Q1
protocol", "no CR within 47 bytes", "Q1 answer is N bytes, expected 47",
"Q1 answer does not start with '('", "Q1 answer is not laid out as the
protocol says" (a missing space), "Q1 field <name> is not a number", "Q1
status bits must be eight 0/1 characters", "Q1 answer is not ASCII" / "has
control characters" (a wrong baud rate looks like this). Silence →
:class:`DeviceSilent`; a vanished port → :class:`DeviceGone` (the next poll
reopens it); a port held by another program (NUT's driver) →
:class:`DevicePortBusy`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from protocol.fields import Scalar

from .base import DeviceProtocolError, DeviceSilent, DeviceSpec, DriverKind, Reading
from .serial_link import SerialLink
from .ups_state import ups_reason, ups_state

DEFAULT_BAUDRATE: Final = 2400
Q1_LENGTH: Final = 47
#: The longest answer of the protocol (Q1); a CR must come within it.
MAX_FRAME: Final = Q1_LENGTH
Q1: Final = b"Q1\r"
RATINGS: Final = b"F\r"
IDENTITY: Final = b"I\r"

_NUMBER: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_UNSUPPORTED: Final = re.compile(r"[@.]+")

#: Q1 fields: (name, first offset, end offset, integer?)
_Q1_FIELDS: Final = (
    ("input_voltage", 1, 6, False),
    ("input_fault_voltage", 7, 12, False),
    ("output_voltage", 13, 18, False),
    ("load_pct", 19, 22, True),
    ("frequency_hz", 23, 27, False),
    ("battery_voltage", 28, 32, False),
    ("temperature_c", 33, 37, False),
)
_Q1_SPACES: Final = (6, 12, 18, 22, 27, 32, 37)
_BITS_AT: Final = 38

#: status bit (0 = b7 … 7 = b0) → flag, in the order flags are reported
_FLAG_BITS: Final = (
    (0, "on_battery"),
    (1, "battery_low"),
    (2, "bypass_boost"),
    (3, "ups_failed"),
    (5, "test_in_progress"),
    (6, "shutdown_active"),
)
_TYPE_BIT: Final = 4
_BEEPER_BIT: Final = 7

_RATING_FIELDS: Final = (
    ("rating_voltage", False),
    ("rating_current_a", True),
    ("rating_battery_voltage", False),
    ("rating_frequency_hz", False),
)
IDENTITY_LENGTH: Final = 39
#: I fields: (name, first offset, end offset)
_IDENTITY_FIELDS: Final = (("manufacturer", 1, 16), ("model", 17, 27), ("firmware", 28, 38))


class MegatecError(DeviceProtocolError):
    """An answer that is not Megatec; the message says what was wrong."""


# -- the pure part ---------------------------------------------------------


def find_frame(buffer: bytes) -> int | None:
    """The length of the first CR-terminated answer in ``buffer``, or None for more.

    Raises :class:`MegatecError` when no CR came within :data:`MAX_FRAME` bytes.
    """
    at = buffer.find(b"\r", 0, MAX_FRAME)
    if at >= 0:
        return at + 1
    if len(buffer) >= MAX_FRAME:
        raise MegatecError(f"no CR within {MAX_FRAME} bytes: {buffer[:MAX_FRAME]!r}")
    return None


def _text(frame: bytes, what: str) -> str:
    try:
        text = frame.decode("ascii")
    except UnicodeDecodeError:
        raise MegatecError(f"{what} answer is not ASCII: {frame[:MAX_FRAME]!r}") from None
    if not text.removesuffix("\r").isprintable():
        raise MegatecError(f"{what} answer has control characters: {frame[:MAX_FRAME]!r}")
    return text


def _number(what: str, name: str, token: str, integer: bool) -> int | float | None:
    """A field's value; None when the UPS filled it with '@' (unsupported)."""
    token = token.strip(" ")
    if _UNSUPPORTED.fullmatch(token) and "@" in token:
        return None
    if not _NUMBER.fullmatch(token) or (integer and "." in token):
        raise MegatecError(f"{what} field {name} is not a number: {token!r}")
    return int(token) if integer else float(token)


def regulation(input_v: float, output_v: float) -> str | None:
    """Which of trim/bypass/boost the bypass bit means, from output ÷ input (as NUT)."""
    if output_v < 0.5 * input_v:
        return None
    if output_v < 0.95 * input_v:
        return "trim"
    if output_v < 1.05 * input_v:
        return "bypass"
    if output_v < 1.5 * input_v:
        return "boost"
    return None


def parse_q1(frame: bytes) -> Reading:
    """A Q1 answer (47 bytes, with its CR) → the UPS's state, flags and measurements."""
    if frame == Q1:
        raise MegatecError("the UPS echoed Q1: it does not speak the Megatec Q1 protocol")
    text = _text(frame, "Q1")
    if len(text) != Q1_LENGTH:
        raise MegatecError(f"Q1 answer is {len(text)} bytes, expected {Q1_LENGTH}: {frame!r}")
    if text[0] != "(":
        raise MegatecError(f"Q1 answer does not start with '(': {frame!r}")
    if text[-1] != "\r" or any(text[i] != " " for i in _Q1_SPACES):
        raise MegatecError(f"Q1 answer is not laid out as the protocol says: {frame!r}")
    attributes: dict[str, Scalar] = {}
    for name, start, end, integer in _Q1_FIELDS:
        value = _number("Q1", name, text[start:end], integer)
        if value is not None:
            attributes[name] = value
    bits = text[_BITS_AT : _BITS_AT + 8]
    if not set(bits) <= {"0", "1"}:
        raise MegatecError(f"Q1 status bits must be eight 0/1 characters: {bits!r}")
    flags = tuple(flag for at, flag in _FLAG_BITS if bits[at] == "1")
    attributes["ups_type"] = "standby" if bits[_TYPE_BIT] == "1" else "online"
    attributes["beeper"] = bits[_BEEPER_BIT] == "1"
    if "bypass_boost" in flags:
        vin, vout = attributes.get("input_voltage"), attributes.get("output_voltage")
        if isinstance(vin, float) and isinstance(vout, float):
            kind = regulation(vin, vout)
            if kind is not None:
                attributes["regulation"] = kind
    return Reading(
        state=ups_state(flags), flags=flags, attributes=attributes, reason=ups_reason(flags)
    )


def parse_ratings(frame: bytes) -> dict[str, Scalar]:
    """An F answer ``#MMM.M QQQ SS.SS RR.R\\r`` → rating_* attributes; {} for an echo."""
    if frame == RATINGS:
        return {}
    text = _text(frame, "F")
    if not text.startswith("#") or not text.endswith("\r"):
        raise MegatecError(f"F answer is not '#…\\r': {frame!r}")
    tokens = text[1:-1].split(" ")
    if len(tokens) != len(_RATING_FIELDS):
        raise MegatecError(f"F answer has {len(tokens)} fields, expected 4: {frame!r}")
    ratings: dict[str, Scalar] = {}
    for (name, integer), token in zip(_RATING_FIELDS, tokens, strict=True):
        value = _number("F", name, token, integer)
        if value is not None:
            ratings[name] = value
    return ratings


def parse_identity(frame: bytes) -> dict[str, Scalar]:
    """An I answer ``#`` company(15) model(10) version(10) → identity; {} for an echo."""
    if frame == IDENTITY:
        return {}
    text = _text(frame, "I")
    if len(text) != IDENTITY_LENGTH or text[0] != "#" or text[16] != " " or text[27] != " ":
        raise MegatecError(f"I answer is not '#' company(15) model(10) version(10): {frame!r}")
    identity: dict[str, Scalar] = {}
    for name, start, end in _IDENTITY_FIELDS:
        value = text[start:end].strip()
        if value.strip("-@"):  # all dashes or '@': the UPS does not say
            identity[name] = value
    return identity


# -- the driver ------------------------------------------------------------


class MegatecUpsDriver:
    """Polls one Megatec UPS: Q1 every poll, F and I once per connection."""

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self._link = SerialLink(spec.port, baudrate=spec.baudrate)
        self._info: dict[str, Scalar] | None = None  # ratings + identity, per connection

    async def poll(self) -> Reading:
        if not self._link.is_open:
            self._info = None
            self._link.open()
        status = parse_q1(await self._ask(Q1))
        if self._info is None:
            ratings = await self._ask_optional(RATINGS, parse_ratings)
            identity = await self._ask_optional(IDENTITY, parse_identity)
            self._info = {**ratings, **identity}
        if not self._info:
            return status
        return replace(status, attributes={**status.attributes, **self._info})

    async def close(self) -> None:
        self._link.close()

    async def _ask(self, command: bytes) -> bytes:
        await asyncio.sleep(0)  # let bytes already on their way in arrive, then drop them
        self._link.discard_input()
        await self._link.write(command)
        return await self._link.read_frame(find_frame, self.spec.timeout_s)

    async def _ask_optional(
        self, command: bytes, parse: Callable[[bytes], dict[str, Scalar]]
    ) -> dict[str, Scalar]:
        """Ratings or identity; {} when the UPS does not know, or not in this layout."""
        try:
            return parse(await self._ask(command))
        except (DeviceSilent, MegatecError):
            return {}


KIND: Final = DriverKind(
    name="megatec_ups", create=MegatecUpsDriver, default_baudrate=DEFAULT_BAUDRATE
)
