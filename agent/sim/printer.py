"""An ESC/POS receipt printer on a pty: answers ``DLE EOT n`` like an Epson TM.

The simulator reads the byte stream the way a printer's real-time command
parser does: it answers ``10 04 n`` for n = 1–4 wherever it appears, even in
the middle of print data or a bit image, and ignores every other byte (text,
ESC and GS commands are "printed" into nothing). A ``DLE EOT`` split across
two writes is still answered; ``DLE EOT n`` with another ``n`` gets no reply,
as on a printer that does not support it.

Faults (each a command; ``<fault> off`` clears one, ``ok`` clears all) and the
status bits they set, consistent the way a real printer reports them:

| command | n=1 | n=2 | n=3 | n=4 |
|---|---|---|---|---|
| ``paper_near_end`` | | | | near end (0x0C) |
| ``paper_end`` | offline | stopped by paper end | | near end + paper end (0x6C) |
| ``cover_open`` | offline | cover open | | |
| ``offline`` | offline | | | |
| ``cutter_error`` | offline | error occurred | autocutter error | |
| ``recoverable_error`` | offline | error occurred | recoverable error | |
| ``unrecoverable_error`` | offline | error occurred | unrecoverable error | |
| ``auto_recoverable_error`` | offline | error occurred | auto-recoverable error | |

Plus the common ``garbage``, ``silence``, ``unplug``, ``replug`` and ``ok``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from .pty import PtySimulator, UnknownCommand

DLE: Final = 0x10
EOT: Final = 0x04
#: Every status byte has these bits: 0xx1xx10.
BASE: Final = 0x12

#: fault → the bits it sets in the replies to n = 1, 2, 3, 4.
FAULT_BITS: Final[dict[str, tuple[int, int, int, int]]] = {
    "paper_near_end": (0x00, 0x00, 0x00, 0x0C),
    "paper_end": (0x08, 0x20, 0x00, 0x6C),
    "cover_open": (0x08, 0x04, 0x00, 0x00),
    "offline": (0x08, 0x00, 0x00, 0x00),
    "cutter_error": (0x08, 0x40, 0x08, 0x00),
    "recoverable_error": (0x08, 0x40, 0x04, 0x00),
    "unrecoverable_error": (0x08, 0x40, 0x20, 0x00),
    "auto_recoverable_error": (0x08, 0x40, 0x40, 0x00),
}


class PrinterSimulator(PtySimulator):
    NAME = "printer"
    COMMANDS = tuple(FAULT_BITS)
    #: The DLE EOT n this model answers (a subclass can model an older printer).
    QUERIES: tuple[int, ...] = (1, 2, 3, 4)

    def __init__(self, link: Path) -> None:
        super().__init__(link)
        self.faults: set[str] = set()
        #: How many status queries were answered (for tests).
        self.answered = 0

    def status(self, n: int) -> int:
        """The reply to ``DLE EOT n`` with the current faults."""
        byte = BASE
        for name in self.faults:
            byte |= FAULT_BITS[name][n - 1]
        return byte

    def respond(self, data: bytes) -> bytes:
        self._inbox += data
        box = self._inbox
        out = bytearray()
        i = 0
        while i < len(box):
            if box[i] != DLE:
                i += 1
                continue
            if i + 1 == len(box) or (box[i + 1] == EOT and i + 2 == len(box)):
                break  # a DLE or DLE EOT at the end: wait for the rest
            if box[i + 1] != EOT:
                i += 1
                continue
            n = box[i + 2]
            if n in self.QUERIES:
                out.append(self.status(n))
                self.answered += 1
                i += 3
            else:
                i += 2  # not a query we answer; n may itself start a DLE
        del box[:i]
        return bytes(out)

    def fault(self, command: str, args: list[str]) -> str:
        if command not in FAULT_BITS:
            raise UnknownCommand(command)
        if args == ["off"]:
            self.faults.discard(command)
            return f"{command} cleared"
        if args:
            raise ValueError(f"{command} takes no argument but 'off'")
        self.faults.add(command)
        return command

    def clear(self) -> None:
        self.faults.clear()
