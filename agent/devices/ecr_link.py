"""The ECR link layer of PIN pads: ``STX data ETX LRC`` frames and control bytes.

Pure: bytes in, units out; no I/O. Ingenico Telium (Caisse/Concert),
Transbank POS Integrado and Nexi ECR17 all frame a message the same way::

    STX (0x02)  data…  ETX (0x03)  LRC

and answer each frame with a single control byte. The units on the wire:

| byte | name | meaning |
|---|---|---|
| ``06`` | ACK | the frame (or ENQ) was received correctly |
| ``15`` | NAK | the frame failed its LRC check: send it again |
| ``05`` | ENQ | "are you there?" — answered with ACK (Telium liveness) |
| ``04`` | EOT | end of the session |
| ``02 … 03 xx`` | a frame | data between STX and ETX, then one LRC byte |

The LRC is an XOR of the frame's bytes, starting from an initial value. The
vendors differ in the start value and whether STX is covered
(:class:`LrcRules`): Telium and Transbank XOR ``data + ETX`` from 0; Nexi
starts from ``0x7F``. The data of a frame never contains STX or ETX.

Reading: :func:`split_unit` says how long the first unit in a buffer is (a
``FrameFinder`` for :meth:`SerialLink.read_frame`) and :func:`parse_unit`
turns it into a :class:`Control` or a :class:`Frame`; :class:`FrameReader`
does both over a stream fed in pieces. A frame with a wrong LRC is a
:class:`Frame` with ``lrc_ok=False`` (the receiver answers NAK); anything
that is neither a control byte nor a complete frame raises
:class:`EcrLinkError` — never any other exception, whatever arrives.

Errors::

    DeviceProtocolError
     └── EcrLinkError     a stray byte, a frame cut short or too long
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from .base import DeviceProtocolError

STX: Final = 0x02
ETX: Final = 0x03
EOT: Final = 0x04
ENQ: Final = 0x05
ACK: Final = 0x06
NAK: Final = 0x15

#: The longest frame we accept (STX + data + ETX + LRC); the messages we
#: exchange for liveness are a few dozen bytes, payments a few hundred.
MAX_FRAME: Final = 1024


class EcrLinkError(DeviceProtocolError):
    """Bytes on the PIN pad link that are neither a control byte nor a frame."""


class Control(enum.IntEnum):
    """A one-byte unit on the link."""

    ACK = ACK
    NAK = NAK
    ENQ = ENQ
    EOT = EOT


@dataclass(frozen=True, slots=True)
class LrcRules:
    """How the LRC of a frame is computed: XOR from ``init`` over data + ETX (+ STX)."""

    init: int = 0x00
    includes_stx: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.init <= 0xFF:
            raise ValueError(f"LRC initial value must be 0..255, got {self.init}")


TELIUM: Final = LrcRules()  # also Transbank: XOR of data + ETX
NEXI: Final = LrcRules(init=0x7F)


@dataclass(frozen=True, slots=True)
class Frame:
    """One ``STX data ETX LRC`` frame as received."""

    data: bytes
    lrc: int  # the LRC byte on the wire
    lrc_ok: bool  # whether it matches the data under the receiver's rules


Unit = Control | Frame


def lrc(data: bytes, rules: LrcRules = TELIUM) -> int:
    """The LRC of a frame carrying ``data``."""
    value = rules.init ^ (STX if rules.includes_stx else 0) ^ ETX
    for byte in data:
        value ^= byte
    return value


def build_frame(data: bytes, rules: LrcRules = TELIUM) -> bytes:
    """``STX data ETX LRC``; ``data`` must not contain STX or ETX (ValueError)."""
    if STX in data or ETX in data:
        raise ValueError("frame data must not contain STX (0x02) or ETX (0x03)")
    if len(data) + 3 > MAX_FRAME:
        raise ValueError(f"frame data longer than {MAX_FRAME - 3} bytes")
    return bytes((STX, *data, ETX, lrc(data, rules)))


def split_unit(buffer: bytes) -> int | None:
    """The length of the first unit in ``buffer``, or None while it is incomplete.

    A byte that is not STX is a unit of its own (a control byte or a stray
    byte). A frame runs to the byte after its ETX; a second STX before the
    ETX, or no ETX within :data:`MAX_FRAME` bytes, ends it early as a broken
    unit, so a reader never waits forever on a frame that will not complete.
    """
    if not buffer:
        return None
    if buffer[0] != STX:
        return 1
    window = buffer[: MAX_FRAME - 1]  # where the ETX of a frame that fits can be
    etx = window.find(ETX, 1)
    stx = window.find(STX, 1)
    if stx != -1 and (etx == -1 or stx < etx):
        return stx
    if etx != -1:
        return etx + 2 if etx + 1 < len(buffer) else None
    return len(window) if len(window) == MAX_FRAME - 1 else None


def parse_unit(unit: bytes, rules: LrcRules = TELIUM) -> Unit:
    """One unit as cut by :func:`split_unit` → a Control or a Frame, else EcrLinkError."""
    if len(unit) == 1:
        try:
            return Control(unit[0])
        except ValueError:
            raise EcrLinkError(f"stray byte {unit!r} on the PIN pad link") from None
    if len(unit) < 3 or unit[0] != STX or unit[-2] != ETX:
        raise EcrLinkError(f"broken frame {unit[:40]!r} on the PIN pad link")
    data = unit[1:-2]
    if STX in data or ETX in data:
        raise EcrLinkError(f"broken frame {unit[:40]!r} on the PIN pad link")
    return Frame(data=data, lrc=unit[-1], lrc_ok=lrc(data, rules) == unit[-1])


class FrameReader:
    """Units out of a byte stream fed in pieces (whole, split, several at once)."""

    def __init__(self, rules: LrcRules = TELIUM) -> None:
        self.rules = rules
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def pending(self) -> bytes:
        """What is buffered but not a complete unit yet."""
        return bytes(self._buffer)

    def clear(self) -> None:
        self._buffer.clear()

    def next_unit(self) -> Unit | None:
        """The next unit, or None until more bytes arrive.

        A broken unit raises :class:`EcrLinkError` and is dropped, so the
        caller may go on reading after it.
        """
        size = split_unit(bytes(self._buffer))
        if size is None:
            return None
        unit = bytes(self._buffer[:size])
        del self._buffer[:size]
        return parse_unit(unit, self.rules)
