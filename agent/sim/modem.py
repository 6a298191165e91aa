"""A 3GPP TS 27.007 cellular modem on a pty: ``posmon-agent simulate modem``.

It behaves like a freshly powered modem: echo on until ``ATE0``, verbose
(``V1``) framing — ``\\r\\n<info>\\r\\n`` lines, then ``\\r\\nOK\\r\\n`` —
and ``+CME ERROR`` as ``AT+CMEE`` asks (0 ``ERROR``, 1 numeric, 2 text).
``replug`` is a power cycle: echo, CMEE and the +CREG/+CEREG modes are back
to their defaults. A command line is ``AT<command>\\r`` (a ``\\n`` after the
``\\r`` is ignored); lines that do not start with ``AT`` get no answer.

Commands answered (also chained with ``;``, stopping at the first error):
``AT``; the basic ``E0 E1 V1 Q0 Z`` in any combination
(``ATE0V1``); ``I``; ``+CMEE=<0-2>`` / ``?``; ``+CSQ``; ``+CREG=<0-2>`` /
``?``; ``+CEREG=<0-2>`` / ``?``; ``+COPS?``; ``+CPIN?``; ``+CGMI`` ``+CGMM``
``+CGMR`` (and ``+GMI`` ``+GMM`` ``+GMR``). Anything else: ``ERROR``.

Whenever a fault changes the registration, the modem sends the unsolicited
``+CREG: <stat>`` (and ``+CEREG: <stat>`` on LTE) at once — whatever the
+CREG mode, so that a driver meets unsolicited codes.

Fault commands (besides ``ok garbage silence unplug replug``):

| command | effect |
|---|---|
| ``signal DBM`` | +CSQ reports the step at or above DBM (−95 → rssi 9); clamped to −113…−51 |
| ``rssi N`` | +CSQ reports rssi N (0–31, 99 = unknown, 100–191) |
| ``unregistered`` ``searching`` ``denied`` ``roaming`` ``home`` | registration stat 0, 2, 3, 5, 1 |
| ``no_sim`` ``sim_pin`` ``sim_puk`` | +CPIN? answers +CME ERROR: 10, SIM PIN, SIM PUK; stat 0 |
| ``operator NAME`` | the operator +COPS reports |
| ``tech gsm|umts|edge|hspa|lte|nbiot|nr`` | the access technology (+COPS AcT 0 2 3 6 7 9 11) |
| ``chatty`` | unsolicited codes before, inside and after every answer |
| ``urc TEXT`` | send ``\\r\\nTEXT\\r\\n`` now |
| ``vendor generic|huawei|sierra|novatel`` | identity and +CREG/+CEREG layout of that vendor |

``ok`` clears the faults (signal −73 dBm, home, SIM ready, LTE, not chatty);
the vendor stays.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .pty import PtySimulator, UnknownCommand

TECH: Final[dict[str, int]] = {
    "gsm": 0,
    "umts": 2,
    "edge": 3,
    "hspa": 6,
    "lte": 7,
    "nbiot": 9,
    "nr": 11,
}
_LTE: Final = frozenset({7, 9, 10})
STAT: Final[dict[str, int]] = {
    "unregistered": 0,
    "home": 1,
    "searching": 2,
    "denied": 3,
    "roaming": 5,
}
SIM_STATES: Final[dict[str, str]] = {"no_sim": "absent", "sim_pin": "SIM PIN", "sim_puk": "SIM PUK"}
#: 27.007 §9.2 numeric and verbose +CME ERROR for each SIM state that is an error.
CME: Final[dict[str, tuple[int, str]]] = {
    "absent": (10, "SIM not inserted"),
    "unsupported": (4, "operation not supported"),
}


@dataclass(frozen=True, slots=True)
class Vendor:
    manufacturer: str
    model: str
    revision: str
    #: How +CREG=2 lays out <lac>,<ci>: "quoted", "hex" (bare) or "spaces".
    layout: str


#: Identity strings: huawei and sierra as ModemManager's
#: src/tests/test-modem-helpers.c records them (devids[]: Huawei E1550,
#: Sierra USBConnect Mercury C885); the layouts follow its +CREG fixtures
#: (Huawei E160G bare hex, Novatel E362 spaces). generic and novatel's
#: identity are made up.
VENDORS: Final[dict[str, Vendor]] = {
    "generic": Vendor("POSMON", "SIM-4G", "1.0.0", "quoted"),
    "huawei": Vendor("huawei", "E1550", "11.608.09.01.21", "hex"),
    "sierra": Vendor(
        "Sierra Wireless, Inc.",
        "C885",
        "J1_0_1_26AP C:/WS/FW/J1_0_1_26AP/MSM7200A/SRC/AMSS 2009/01/30 07:58:06",
        "hex",
    ),
    "novatel": Vendor("Novatel Wireless", "E362", "1.0", "spaces"),
}
_BASIC: Final = re.compile(r"(?:[EVQ][01]?|Z)+")
_SETTING: Final = re.compile(r"\+(CMEE|CREG|CEREG)=([0-9])")
DEFAULT_RSSI: Final = 20  # −73 dBm
DEFAULT_OPERATOR: Final = "posmon Mobile"
LAC: Final = "00C3"
CI: Final = "0010AB01"


class ModemSimulator(PtySimulator):
    NAME = "modem"
    COMMANDS = (
        "signal DBM",
        "rssi N",
        "unregistered",
        "searching",
        "denied",
        "roaming",
        "home",
        "no_sim",
        "sim_pin",
        "sim_puk",
        "operator NAME",
        "tech gsm|umts|edge|hspa|lte|nbiot|nr",
        "chatty",
        "urc TEXT",
        "vendor " + "|".join(VENDORS),
    )

    def __init__(self, link: Path) -> None:
        super().__init__(link)
        self.vendor = VENDORS["generic"]
        self._faults_cleared()
        self._power_on()

    def _faults_cleared(self) -> None:
        self.rssi = DEFAULT_RSSI
        self.ber = 99
        self.stat = 1
        self.sim = "READY"
        self.operator = DEFAULT_OPERATOR
        self.act = TECH["lte"]
        self.chatty = False

    def _power_on(self) -> None:
        self.echo = True
        self.cmee = 0
        self.creg_n = 0
        self.cereg_n = 0

    def plug(self) -> None:
        if self.master is None:
            self._power_on()  # plugged back: the modem boots with its defaults
        super().plug()

    # -- state seen on the air ----------------------------------------------

    @property
    def registration(self) -> int:
        """+CREG's <stat>: not registered without a ready SIM."""
        return self.stat if self.sim == "READY" else 0

    @property
    def eps_registration(self) -> int:
        """+CEREG's <stat>: the registration on LTE, else 0."""
        return self.registration if self.act in _LTE else 0

    def _reg_fields(self, stat: int) -> str:
        layout = self.vendor.layout
        if layout == "hex":
            return f"{stat},{LAC},{CI[-4:]}"
        if layout == "spaces":
            return f"{stat}, {LAC}, {CI} ,{self.act}"
        return f'{stat},"{LAC}","{CI}",{self.act}'

    def _reg_line(self, prefix: str, n: int, stat: int) -> str:
        if n == 2 and stat in (1, 5):
            return f"{prefix}: 2,{self._reg_fields(stat)}"
        return f"{prefix}: {n},{stat}"

    # -- the AT interpreter ---------------------------------------------------

    def respond(self, data: bytes) -> bytes:
        self._inbox += data
        out = bytearray()
        while (end := self._inbox.find(b"\r")) >= 0:
            line = bytes(self._inbox[:end]).lstrip(b"\n")
            del self._inbox[: end + 1]
            echo = line + b"\r" if self.echo else b""
            info, final = self.execute(line.decode("ascii", "replace").strip())
            if final is None:
                out += echo
                continue
            # Chatty codes contradict the state on purpose: a driver must skip them.
            out += self._chat(b"\r\n+CEREG: 3\r\n") + echo + self._chat(b"\r\n^RSSI: 17\r\n")
            out += b"".join(b"\r\n" + ln.encode() + b"\r\n" for ln in info)
            out += self._chat(b'\r\n+CREG: 5,"00C3","0010AB01",7\r\n\r\nRING\r\n')
            out += b"\r\n" + final.encode() + b"\r\n"
        if len(self._inbox) > 1024:  # no CR in a kilobyte: line noise
            self._inbox.clear()
        return bytes(out)

    def _chat(self, urc: bytes) -> bytes:
        return urc if self.chatty else b""

    def _error(self, what: str) -> str:
        code, text = CME[what]
        return ("ERROR", f"+CME ERROR: {code}", f"+CME ERROR: {text}")[self.cmee]

    def execute(self, text: str) -> tuple[list[str], str | None]:
        """One command line → (information lines, final result code); final None: no answer."""
        if text[:2].upper() != "AT":
            return [], None
        body = text[2:].upper()
        if body == "":
            return [], "OK"
        if ";" in body:  # chained extended commands (V.250 §5.4): stop at the first error
            chained: list[str] = []
            for part in body.split(";"):
                info, final = self.execute("AT" + part)
                chained += info
                if final != "OK":
                    return chained, final
            return chained, "OK"
        if _BASIC.fullmatch(body):
            return self._basic(body)
        v = self.vendor
        identity = {"+CGMI": [v.manufacturer], "+CGMM": [v.model], "+CGMR": [v.revision]}
        identity["I"] = [v.manufacturer, v.model, v.revision]
        if (lines := identity.get(body.replace("+G", "+CG"))) is not None:
            return lines, "OK"
        if (setting := _SETTING.fullmatch(body)) is not None:
            return self._set(setting[1], int(setting[2]))
        if body == "+CMEE?":
            return [f"+CMEE: {self.cmee}"], "OK"
        if body == "+CSQ":
            return [f"+CSQ: {self.rssi},{self.ber}"], "OK"
        if body == "+CREG?":
            return [self._reg_line("+CREG", self.creg_n, self.registration)], "OK"
        if body == "+CEREG?":
            return [self._reg_line("+CEREG", self.cereg_n, self.eps_registration)], "OK"
        if body == "+COPS?":
            if self.registration in (1, 5):
                return [f'+COPS: 0,0,"{self.operator}",{self.act}'], "OK"
            return ["+COPS: 0"], "OK"
        if body == "+CPIN?":
            if self.sim == "absent":
                return [], self._error("absent")
            return [f"+CPIN: {self.sim}"], "OK"
        return [], "ERROR"

    def _basic(self, body: str) -> tuple[list[str], str | None]:
        for cmd, arg in re.findall(r"([EVQZ])([01]?)", body):
            if cmd == "E":
                self.echo = arg != "0"
            elif cmd == "Z":
                self._power_on()
            elif (cmd, arg) in (("V", "0"), ("Q", "1")):
                return [], "ERROR"  # numeric or quiet result codes: not simulated
        return [], "OK"

    def _set(self, name: str, value: int) -> tuple[list[str], str | None]:
        if value > 2:
            return [], self._error("unsupported")
        if name == "CMEE":
            self.cmee = value
        elif name == "CREG":
            self.creg_n = value
        else:
            self.cereg_n = value
        return [], "OK"

    # -- unsolicited codes ----------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send ``data`` unasked, as the base sends answers (garbage, silence)."""
        if self.master is None or self.silent:
            return
        if self.garbage:
            data = secrets.token_bytes(len(data))
        with contextlib.suppress(OSError):
            os.write(self.master, data)

    def _urc(self, prefix: str, n: int, stat: int) -> bytes:
        """The unsolicited ``+CREG: <stat>[,<lac>,<ci>[,<AcT>]]`` (no <n>, unlike the reply)."""
        fields = self._reg_fields(stat) if n == 2 and stat in (1, 5) else str(stat)
        return f"\r\n{prefix}: {fields}\r\n".encode()

    def _changed(self, before: tuple[int, int]) -> None:
        urcs = b""
        if self.registration != before[0]:
            urcs += self._urc("+CREG", self.creg_n, self.registration)
        if self.eps_registration != before[1]:
            urcs += self._urc("+CEREG", self.cereg_n, self.eps_registration)
        if urcs:
            self.send(urcs)

    # -- fault commands -------------------------------------------------------

    def fault(self, command: str, args: list[str]) -> str:
        before = (self.registration, self.eps_registration)
        try:
            return self._fault(command, args)
        finally:
            self._changed(before)

    def _fault(self, command: str, args: list[str]) -> str:
        if command == "signal":
            dbm = _int_arg(command, args)
            self.rssi = min(31, max(0, math.ceil((dbm + 113) / 2)))
            return f"signal {-113 + 2 * self.rssi} dBm (rssi {self.rssi})"
        if command == "rssi":
            rssi = _int_arg(command, args)
            if not (0 <= rssi <= 31 or rssi == 99 or 100 <= rssi <= 191):
                raise ValueError("rssi must be 0–31, 99 (unknown) or 100–191")
            self.rssi = rssi
            return f"rssi {rssi}"
        if command in STAT:
            self.stat = STAT[command]
            return f"registration {command} (stat {self.stat})"
        if command in SIM_STATES:
            self.sim = SIM_STATES[command]
            return f"SIM {self.sim}"
        if command == "operator":
            name = " ".join(args)
            if not name or '"' in name:
                raise ValueError('operator needs a name without quotes: operator "Vodafone DE"')
            self.operator = name
            return f"operator {name}"
        if command == "tech":
            if len(args) != 1 or args[0].lower() not in TECH:
                raise ValueError(f"tech needs one of {', '.join(TECH)}")
            self.act = TECH[args[0].lower()]
            return f"access technology {args[0].lower()} (AcT {self.act})"
        if command == "chatty":
            self.chatty = True
            return "unsolicited codes in every answer"
        if command == "urc":
            if not args:
                raise ValueError("urc needs the text to send, e.g. urc RING")
            text = " ".join(args)
            self.send(f"\r\n{text}\r\n".encode())
            return f"sent {text}"
        if command == "vendor":
            if len(args) != 1 or args[0].lower() not in VENDORS:
                raise ValueError(f"vendor needs one of {', '.join(VENDORS)}")
            self.vendor = VENDORS[args[0].lower()]
            return f"vendor {args[0].lower()}"
        raise UnknownCommand(command)

    def clear(self) -> None:
        before = (self.registration, self.eps_registration)
        self._faults_cleared()
        self._changed(before)


def _int_arg(command: str, args: list[str]) -> int:
    if len(args) != 1 or re.fullmatch(r"[+-]?[0-9]{1,4}", args[0]) is None:
        raise ValueError(f"{command} needs one whole number, e.g. {command} -95")
    return int(args[0])
