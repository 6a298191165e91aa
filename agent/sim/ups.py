"""A Megatec/Q1 UPS on a pty: ``posmon-agent simulate ups``.

It answers like a standby (line-interactive) 650 VA UPS with a 12 V battery,
per the Megatec spec: every request ends in ``\\r``;

- ``Q1`` → ``(230.0 230.0 230.0 025 50.0 13.6 25.0 00001001\\r`` (47 bytes);
- ``F`` → ``#230.0 004 12.00 50.0\\r`` (ratings);
- ``I`` → ``#POSMON          SIM-650VA  1.0.0     \\r`` (company, model, version);
- the actions ``Q`` (toggle the beeper), ``T``/``TL``/``Tnn`` (start a battery
  test), ``CT`` (stop it), ``Snn``/``SnnRmmmm`` (shut down), ``C`` (cancel the
  shutdown) change the status bits and answer nothing;
- anything else is echoed back, as a real one does with an unknown command.

Fault commands (they combine; ``ok`` clears them all):

| command | status bit | what changes |
|---|---|---|
| ``on_battery`` | b7 | input voltage 0 |
| ``battery_low`` | b6 | battery voltage low |
| ``bypass [boost|trim|bypass]`` | b5 | input/output voltages whose ratio means that mode |
| ``ups_failed`` | b4 | |
| ``test`` | b2 | |
| ``shutdown`` | b1 | |
| ``load N`` | | load, % (0–999) |
| ``voltage N`` | | input voltage (0–999.9) |
| ``type online|standby`` | b3 | battery reported per cell (S.SS) when on-line |
| ``beeper on|off`` | b0 | |

``bypass`` picks boost by default; output ÷ input below 0.95 reads as trim,
below 1.05 as bypass, below 1.5 as boost (NUT's rule, and our driver's).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .pty import PtySimulator, UnknownCommand

NOMINAL_V: Final = 230.0
#: bypass mode → (input V, output V): output ÷ input below 0.95 is trim, below
#: 1.05 bypass, below 1.5 boost (how NUT and our driver tell them apart)
BYPASS_VOLTAGES: Final = {"boost": (195.0, 224.0), "trim": (255.0, 232.0), "bypass": (230.0, 230.0)}
RATINGS: Final = b"#230.0 004 12.00 50.0\r"
IDENTITY: Final = b"#%-15s %-10s %-10s\r" % (b"POSMON", b"SIM-650VA", b"1.0.0")
#: bit name → position in the status string (b7 first)
BITS: Final = {
    "on_battery": 0,
    "battery_low": 1,
    "bypass": 2,
    "ups_failed": 3,
    "standby": 4,
    "test": 5,
    "shutdown": 6,
    "beeper": 7,
}


@dataclass
class UpsState:
    """What the simulated UPS measures and which status bits are set."""

    input_v: float = NOMINAL_V
    output_v: float = NOMINAL_V
    load_pct: int = 25
    frequency_hz: float = 50.0
    temperature_c: float = 25.0
    bits: set[str] = field(default_factory=lambda: {"standby", "beeper"})

    def q1(self) -> bytes:
        standby = "standby" in self.bits
        low = "battery_low" in self.bits
        # standby: SS.S volts of the whole 12 V battery; on-line: S.SS volts per cell
        battery = f"{10.6 if low else 13.6:04.1f}" if standby else f"{1.77 if low else 2.27:4.2f}"
        status = "".join("1" if name in self.bits else "0" for name in BITS)
        text = (
            f"({self.input_v:05.1f} {self.input_v:05.1f} {self.output_v:05.1f} "
            f"{self.load_pct:03d} {self.frequency_hz:04.1f} {battery} "
            f"{self.temperature_c:04.1f} {status}\r"
        )
        return text.encode("ascii")


class UpsSimulator(PtySimulator):
    NAME = "ups"
    COMMANDS = (
        "on_battery",
        "battery_low",
        "bypass [boost|trim|bypass]",
        "ups_failed",
        "test",
        "shutdown",
        "load N",
        "voltage N",
        "type online|standby",
        "beeper on|off",
    )

    def __init__(self, link: Path) -> None:
        super().__init__(link)
        self.state = UpsState()
        #: the last request lines received (without CR), for tests that check what was asked
        self.requests: deque[bytes] = deque(maxlen=1000)
        #: how many request lines were answered (or not) since this simulator was made
        self.request_count = 0

    # -- the protocol -----------------------------------------------------

    def respond(self, data: bytes) -> bytes:
        self._inbox += data
        out = b""
        while (at := self._inbox.find(b"\r")) >= 0:
            line = bytes(self._inbox[:at])
            del self._inbox[: at + 1]
            out += self.answer(line)
        return out

    def answer(self, line: bytes) -> bytes:
        """The answer to one request (without its CR)."""
        self.requests.append(line)
        self.request_count += 1
        bits = self.state.bits
        if line == b"Q1":
            return self.state.q1()
        if line == b"F":
            return RATINGS
        if line == b"I":
            return IDENTITY
        if line == b"Q":
            bits.symmetric_difference_update({"beeper"})
        elif line == b"CT":
            bits.discard("test")
        elif line == b"C":
            bits.discard("shutdown")
        elif line in (b"T", b"TL") or _is_test(line):
            bits.add("test")
        elif _is_shutdown(line):
            bits.add("shutdown")
        elif line:
            return line + b"\r"  # unknown command: echoed back
        return b""

    # -- faults -----------------------------------------------------------

    def fault(self, command: str, args: list[str]) -> str:
        state = self.state
        if command in ("on_battery", "battery_low", "ups_failed", "test", "shutdown"):
            state.bits.add(command)
            if command == "on_battery":
                state.input_v = 0.0
            return f"{command} set"
        if command == "bypass":
            mode = _one_arg(command, args, "boost")
            if mode not in BYPASS_VOLTAGES:
                raise ValueError(f"bypass takes boost, trim or bypass, not {mode!r}")
            state.bits.add("bypass")
            state.input_v, state.output_v = BYPASS_VOLTAGES[mode]
            return f"{mode} active: input {state.input_v:g} V, output {state.output_v:g} V"
        if command == "load":
            state.load_pct = int(_number(command, args, 0, 999, integer=True))
            return f"load {state.load_pct} %"
        if command == "voltage":
            state.input_v = _number(command, args, 0, 999.9)
            return f"input voltage {state.input_v:g} V"
        if command == "type":
            kind = _one_arg(command, args, "")
            if kind not in ("online", "standby"):
                raise ValueError("type takes online or standby")
            if kind == "standby":
                state.bits.add("standby")
            else:
                state.bits.discard("standby")
            return f"{kind} UPS"
        if command == "beeper":
            on = _one_arg(command, args, "")
            if on not in ("on", "off"):
                raise ValueError("beeper takes on or off")
            if on == "on":
                state.bits.add("beeper")
            else:
                state.bits.discard("beeper")
            return f"beeper {on}"
        raise UnknownCommand(command)

    def clear(self) -> None:
        self.state = UpsState()


def _is_test(line: bytes) -> bool:
    return len(line) == 3 and line[:1] == b"T" and line[1:].isdigit()


def _is_shutdown(line: bytes) -> bool:
    """``Sn``/``SnRmmmm`` with n = .2–.9 or 01–10."""
    delay, _, restart = line[1:].partition(b"R")
    if line[:1] != b"S" or len(delay) != 2:
        return False
    ok_delay = delay.isdigit() or (delay[:1] == b"." and delay[1:].isdigit())
    return ok_delay and (restart == b"" or (len(restart) == 4 and restart.isdigit()))


def _one_arg(command: str, args: list[str], default: str) -> str:
    if len(args) > 1:
        raise ValueError(f"{command} takes one argument")
    return args[0].lower() if args else default


def _number(command: str, args: list[str], low: float, high: float, integer: bool = False) -> float:
    if len(args) != 1:
        raise ValueError(f"{command} takes one number")
    try:
        value = int(args[0]) if integer else round(float(args[0]), 1)
    except ValueError:
        raise ValueError(f"{command} takes a number, not {args[0]!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{command} must be between {low:g} and {high:g}")
    return value
