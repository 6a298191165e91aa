"""A PIN pad's ECR link on a pty: ENQ/ACK, framed messages with an LRC, ACK/NAK.

It answers like the terminals in :mod:`agent.devices.ecr_link`:

- ``ENQ`` → ``ACK`` (Telium liveness); ``EOT`` ends the session (no answer);
- a frame whose LRC is right (under the simulator's own :class:`LrcRules`;
  ``posmon-agent simulate pinpad`` uses the Telium/Transbank defaults) →
  ``ACK``; for the poll message (``0100``) also an answer frame ``0110|00``
  (made up for tests: real Transbank terminals answer POLL with ACK only),
  sent again when the other side NAKs it, at most 3 times;
- a frame with a wrong LRC → ``NAK``; stray bytes are ignored.

Fault commands besides the common ones (``garbage``, ``silence``,
``unplug``, ``replug``, ``ok``):

| command | effect |
|---|---|
| ``busy`` | answer nothing at all (a terminal busy with a payment, or not configured) |
| ``nak`` | answer NAK to everything |
| ``bad_lrc`` | the answer frames carry a wrong LRC |
| ``lrc INIT [stx]`` | LRC from INIT (``0x7f``: Nexi), over STX too with ``stx``; kept by ``ok`` |

:attr:`PinpadSimulator.log` records what arrived, one word per unit
(``ENQ``, ``EOT``, ``ACK``, ``NAK``, ``frame 0100``, ``bad frame 0100``,
``junk``), so a test can count retransmissions.
"""

from __future__ import annotations

from pathlib import Path

from ..devices.ecr_link import (
    TELIUM,
    Control,
    EcrLinkError,
    FrameReader,
    LrcRules,
    build_frame,
)
from .pty import PtySimulator, UnknownCommand


class PinpadSimulator(PtySimulator):
    NAME = "pinpad"
    COMMANDS = ("busy", "nak", "bad_lrc", "lrc INIT [stx]")
    #: How often an answer frame is sent again after a NAK.
    RETRANSMITS = 3

    def __init__(
        self,
        link: Path,
        *,
        rules: LrcRules = TELIUM,
        poll_message: bytes = b"0100",
        answer: bytes = b"0110|00",
    ) -> None:
        super().__init__(link)
        self.poll_message = poll_message
        self.answer = answer
        self.busy = self.nak = self.bad_lrc = False
        self.log: list[str] = []
        self._reader = FrameReader(rules)
        self._pending: bytes | None = None  # our answer frame, until it is ACKed
        self._resent = 0

    @property
    def rules(self) -> LrcRules:
        return self._reader.rules

    @rules.setter
    def rules(self, rules: LrcRules) -> None:
        self._reader.rules = rules

    def respond(self, data: bytes) -> bytes:
        self._reader.feed(data)
        out = bytearray()
        while True:
            try:
                unit = self._reader.next_unit()
            except EcrLinkError:
                self.log.append("junk")
                continue
            if unit is None:
                return bytes(out)
            if isinstance(unit, Control):
                self.log.append(unit.name)
                out += self._control(unit)
            else:
                text = unit.data.decode("ascii", "replace")
                self.log.append(f"frame {text}" if unit.lrc_ok else f"bad frame {text}")
                out += self._frame(unit.data, unit.lrc_ok)

    def _control(self, unit: Control) -> bytes:
        if self.busy:
            return b""
        if unit is Control.ENQ:
            return bytes((Control.NAK if self.nak else Control.ACK,))
        if unit is Control.ACK:
            self._pending = None
        elif unit is Control.NAK and self._pending is not None:
            if self._resent < self.RETRANSMITS:
                self._resent += 1
                return self._pending
            self._pending = None
        return b""  # EOT: the session ends

    def _frame(self, data: bytes, lrc_ok: bool) -> bytes:
        if self.busy:
            return b""
        if self.nak or not lrc_ok:
            return bytes((Control.NAK,))
        if data != self.poll_message:
            return bytes((Control.ACK,))
        frame = build_frame(self.answer, self.rules)
        if self.bad_lrc:
            frame = frame[:-1] + bytes((frame[-1] ^ 0xFF,))
        self._pending, self._resent = frame, 0
        return bytes((Control.ACK,)) + frame

    def fault(self, command: str, args: list[str]) -> str:
        if command == "busy":
            self.busy = True
            return "busy: answering nothing"
        if command == "nak":
            self.nak = True
            return "answering NAK to everything"
        if command == "bad_lrc":
            self.bad_lrc = True
            return "answer frames carry a wrong LRC"
        if command == "lrc":
            self.rules = _rules(args)
            stx = " including STX" if self.rules.includes_stx else ""
            return f"LRC from 0x{self.rules.init:02x} over data + ETX{stx}"
        raise UnknownCommand(command)

    def clear(self) -> None:
        self.busy = self.nak = self.bad_lrc = False

    def unplug(self) -> None:
        super().unplug()
        self._reader.clear()
        self._pending = None


def _rules(args: list[str]) -> LrcRules:
    if not args or len(args) > 2 or (len(args) == 2 and args[1].lower() != "stx"):
        raise ValueError("usage: lrc INIT [stx] (INIT 0..255, e.g. 0 or 0x7f)")
    try:
        return LrcRules(init=int(args[0], 0), includes_stx=len(args) == 2)
    except ValueError:
        raise ValueError(f"LRC initial value must be 0..255, got {args[0]!r}") from None
