"""4G/3G/2G modems over AT commands (3GPP TS 27.007): kind ``at_modem``.

What it reads, every poll: ``AT+CPIN?`` (SIM state), ``AT+CSQ`` (signal),
``AT+CREG?`` and ``AT+CEREG?`` (registration, circuit and LTE), ``AT+COPS?``
(operator, access technology). After the port is opened, and again after
any failed poll: ``ATE0V1`` (echo off, verbose result codes), ``AT+CMEE=1``
(numeric ``+CME ERROR: <n>``) and the identity ``AT+CGMI``/``CGMM``/``CGMR``
(an ERROR there only leaves the attribute out). Echo lines and unsolicited
codes (``RING``, ``+CREG: 1``, ``^RSSI: 17``) anywhere in an answer are
skipped; the framing and the parsers are in :mod:`agent.devices.at_parse`.

Flags, in this order:

| flag | meaning | state |
|---|---|---|
| ``no_sim`` | no SIM card (``+CME ERROR: 10``, ``+CPIN: NOT INSERTED``) | fault |
| ``sim_locked`` | the SIM asks for a PIN or PUK (``SIM PIN``, ``SIM PUK``, ``PH-…``) | fault |
| ``sim_error`` | the SIM cannot be read (SIM failure, wrong SIM, a bare ERROR) | fault |
| ``sim_busy`` | the SIM is still starting (SIM busy, not ready) | warning |
| ``not_registered`` | on no network: stat 0 (idle), 4 (unknown), 8 (emergency only), 11 | fault |
| ``searching`` | looking for a network (stat 2) | warning |
| ``registration_denied`` | the network refused the SIM (stat 3) | fault |
| ``roaming`` | registered on a visited network (stat 5, 7, 10) | warning |
| ``weak_signal`` | signal below ``weak_dbm`` | warning |
| ``no_signal`` | rssi 99 (not detectable) while not registered | fault |

The registration is the better one of +CREG and +CEREG (registered on either
counts, then searching, then denied): an LTE-only modem is idle on +CREG, a
3G modem answers ERROR to +CEREG. The registration flags are left out when a
SIM flag already explains them. Roaming is a warning, not ok: a store SIM
that roams costs money or means the home network is gone; for SIMs that
always roam (many IoT SIMs) set ``allow_roaming``. rssi 99 on a registered
modem (some LTE modules do not fill +CSQ) is "unknown", not ``no_signal``.

State: ``fault`` if a fault flag is set, else ``warning`` if a warning flag
is, else ``ok``. The reason names the flags in plain words, faults first.

Attributes: ``signal_dbm`` (int; left out when unknown), ``rssi``, ``ber``
(99 = unknown), ``registration`` (``home``, ``roaming``, ``searching``,
``denied``, ``not_registered``, ``unknown``, ``home_sms_only``, …), ``sim``
(``ready``, ``sim_pin``, ``sim_puk``, ``not_inserted``, ``failure``, …),
``operator`` and ``access_technology`` (GSM, UMTS, EDGE, HSDPA, HSUPA, HSPA,
LTE, NB-IoT, 5G NR, …; from +COPS, else from the registration) when known,
``manufacturer``, ``model``, ``firmware`` when the modem answers them.

Options (``[[device]]`` keys): ``weak_dbm`` (default −100; a signal below
it is ``weak_signal``), ``use_cereg`` (default true; false skips
``AT+CEREG?``), ``allow_roaming`` (default false). Default baud rate 115200.

Errors: the port missing or vanishing → ``DeviceGone``; locked by another
process → ``DevicePortBusy``; no complete answer within
``timeout_s`` → ``DeviceSilent`` naming the command; bytes that are not AT
text, or an answer without the expected line → ``AtError`` naming the
command. After any of them the next poll starts with the set-up again.

The driver must own its AT port. ModemManager opens AT ports in exclusive
terminal mode (``TIOCEXCL``, ``src/mm-port-serial.c``): while it holds the
port a non-root agent gets ``DevicePortBusy``, and it does not honour our
``flock`` either. Tell it to leave the port alone (udev
``ENV{ID_MM_DEVICE_IGNORE}="1"``), stop it, or use the modem's second AT port.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from protocol.fields import Scalar

from .at_parse import (
    ACCESS_TECHNOLOGY,
    HOME,
    ROAMING,
    AtError,
    Registration,
    Response,
    find_response,
    parse_cops,
    parse_cpin,
    parse_csq,
    parse_registration,
    parse_response,
    parse_text,
)
from .base import DeviceSilent, DeviceSpec, DeviceState, DriverKind, Reading
from .serial_link import SerialLink

if TYPE_CHECKING:
    from ..configkit import Section

__all__ = ["KIND", "AtError", "ModemDriver", "ModemOptions", "parse_options", "read_status"]

#: Once per connection: echo off and verbose result codes in one line (the
#: final code comes in the new format even from a modem left in ATV0), then
#: numeric +CME ERROR codes.
SETUP: Final = ("ATE0V1", "AT+CMEE=1")
#: Identity command → attribute and the prefix some modems put before the text.
IDENTITY: Final = (
    ("AT+CGMI", "manufacturer", "+CGMI"),
    ("AT+CGMM", "model", "+CGMM"),
    ("AT+CGMR", "firmware", "+CGMR"),
)

FLAGS: Final = (
    "no_sim",
    "sim_locked",
    "sim_error",
    "sim_busy",
    "not_registered",
    "searching",
    "registration_denied",
    "roaming",
    "weak_signal",
    "no_signal",
)
FAULT_FLAGS: Final = frozenset(
    {"no_sim", "sim_locked", "sim_error", "not_registered", "registration_denied", "no_signal"}
)
SIM_FLAGS: Final = frozenset({"no_sim", "sim_locked", "sim_error", "sim_busy"})
WORDS: Final[dict[str, str]] = {
    "no_sim": "no SIM card — insert the SIM",
    "sim_locked": "the SIM asks for its PIN or PUK — unlock it or use a SIM without a PIN",
    "sim_error": "the modem cannot read the SIM — reseat or replace it",
    "sim_busy": "the SIM is still starting up",
    "not_registered": "not on any mobile network — check the SIM's contract and the antenna",
    "searching": "searching for a mobile network",
    "registration_denied": "the mobile network refuses the SIM — call the operator",
    "roaming": "roaming on another operator's network",
    "weak_signal": "weak mobile signal — move the modem or its antenna",
    "no_signal": "no mobile signal — check the antenna",
}
_SIM_OK: Final = frozenset({"ready", "sim_pin2", "sim_puk2"})
_SIM_BUSY: Final = frozenset({"busy", "not_ready"})


@dataclass(frozen=True, slots=True)
class ModemOptions:
    weak_dbm: float = -100.0
    use_cereg: bool = True
    allow_roaming: bool = False


def parse_options(sec: Section, base: Path) -> ModemOptions:
    from ..configkit import opt_bool, opt_float

    return ModemOptions(
        weak_dbm=opt_float(sec, "weak_dbm", -100.0, ge=-113, le=-51),
        use_cereg=opt_bool(sec, "use_cereg", True),
        allow_roaming=opt_bool(sec, "allow_roaming", False),
    )


def poll_commands(options: ModemOptions) -> tuple[str, ...]:
    """The commands of one poll, in order."""
    cereg = ("AT+CEREG?",) if options.use_cereg else ()
    return ("AT+CPIN?", "AT+CSQ", "AT+CREG?", *cereg, "AT+COPS?")


def _sim_flag(sim: str) -> str | None:
    if sim in _SIM_OK:
        return None
    if sim == "not_inserted":
        return "no_sim"
    if sim in _SIM_BUSY:
        return "sim_busy"
    if "pin" in sim or "puk" in sim:
        return "sim_locked"
    return "sim_error"


def _combine(regs: list[Registration]) -> Registration | None:
    """The better registration: registered on either, then searching, then denied."""
    for wanted in (HOME | ROAMING, {2}, {3}):
        for reg in regs:
            if reg.stat in wanted:
                return reg
    return regs[0] if regs else None


def read_status(
    answers: Mapping[str, Response],
    options: ModemOptions = ModemOptions(),
    identity: Mapping[str, Scalar] | None = None,
) -> Reading:
    """The reading from the answers to :func:`poll_commands` (keyed by command)."""
    sim = parse_cpin(answers["AT+CPIN?"])
    signal = parse_csq(answers["AT+CSQ"])
    regs = [
        reg
        for cmd, prefix in (("AT+CEREG?", "+CEREG"), ("AT+CREG?", "+CREG"))
        if cmd in answers and (reg := parse_registration(answers[cmd], prefix)) is not None
    ]
    operator = parse_cops(answers["AT+COPS?"])
    reg = _combine(regs)
    registered = reg is not None and reg.stat in HOME | ROAMING

    on: set[str] = set()
    if (sim_flag := _sim_flag(sim)) is not None:
        on.add(sim_flag)
    else:
        stat = reg.stat if reg is not None else 4
        if stat == 2:
            on.add("searching")
        elif stat == 3:
            on.add("registration_denied")
        elif stat in ROAMING:
            if not options.allow_roaming:
                on.add("roaming")
        elif not registered:
            on.add("not_registered")
    dbm = signal.dbm
    if dbm is None:
        if not registered:
            on.add("no_signal")
    elif dbm < options.weak_dbm:
        on.add("weak_signal")

    flags = tuple(f for f in FLAGS if f in on)
    attributes: dict[str, Scalar] = {"rssi": signal.rssi, "ber": signal.ber, "sim": sim}
    if dbm is not None:
        attributes["signal_dbm"] = dbm
    attributes["registration"] = reg.name if reg is not None else "unknown"
    if operator.name is not None:
        attributes["operator"] = operator.name
    act = operator.act if operator.act is not None else reg.act if reg is not None else None
    if act is not None and act in ACCESS_TECHNOLOGY:
        attributes["access_technology"] = ACCESS_TECHNOLOGY[act]
    attributes.update(identity or {})
    return Reading(
        state=_state(flags),
        flags=flags,
        attributes=attributes,
        reason=_reason(flags, dbm),
    )


def _state(flags: tuple[str, ...]) -> DeviceState:
    if any(f in FAULT_FLAGS for f in flags):
        return "fault"
    return "warning" if flags else "ok"


def _reason(flags: tuple[str, ...], dbm: int | None) -> str | None:
    ordered = [f for f in flags if f in FAULT_FLAGS] + [f for f in flags if f not in FAULT_FLAGS]
    words = [WORDS[f] + (f" ({dbm} dBm)" if f == "weak_signal" else "") for f in ordered]
    return "; ".join(words) or None


def parse_transcript(
    data: bytes,
    options: ModemOptions = ModemOptions(),
) -> Reading:
    """The reading from the modem's answers to one poll, back to back as on the wire.

    Bytes after the last answer are ignored (unsolicited codes arrive any time).
    """
    answers: dict[str, Response] = {}
    rest = data
    for cmd in poll_commands(options):
        size = find_response(rest)
        if size is None:
            raise AtError(f"the transcript ends before the answer to {cmd}")
        answers[cmd] = parse_response(rest[:size], cmd)
        rest = rest[size:]
    return read_status(answers, options)


class ModemDriver:
    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self.options: ModemOptions = spec.options or ModemOptions()
        self._link = SerialLink(spec.port, baudrate=spec.baudrate)
        self._identity: dict[str, Scalar] | None = None  # None: set up on the next poll
        self._chain = True  # ask the poll's commands in one chained line

    async def poll(self) -> Reading:
        link = self._link
        if not link.is_open:
            self._identity = None
            self._chain = True
            link.open()
        try:
            if self._identity is None:
                for cmd in SETUP:
                    await self._ask(cmd)
                identity: dict[str, Scalar] = {}
                for cmd, attribute, prefix in IDENTITY:
                    text = parse_text(await self._ask(cmd), prefix)
                    if text is not None:
                        identity[attribute] = text
                self._identity = identity
            return read_status(await self._status(), self.options, self._identity)
        except Exception:
            self._identity = None  # the modem may have restarted: echo on again
            raise

    async def _status(self) -> dict[str, Response]:
        """The poll's answers: one chained command (one round trip) where the modem
        takes it, else one command at a time.

        A chained line stops at its first error (no SIM answers ``+CPIN?`` with
        ``+CME ERROR: 10``), so after an error the commands are asked one by
        one; if they then all succeed, the modem does not chain and is not asked
        to again until it is reconnected.
        """
        commands = poll_commands(self.options)
        if self._chain:
            joined = "AT" + ";".join(cmd[2:] for cmd in commands)
            response = await self._ask(joined)
            if response.ok:
                return {cmd: _part(response, cmd) for cmd in commands}
        answers = {cmd: await self._ask(cmd) for cmd in commands}
        if all(answer.ok for answer in answers.values()):
            self._chain = False
        return answers

    async def _ask(self, command: str) -> Response:
        link = self._link
        link.discard_input()
        await link.write(command.encode("ascii") + b"\r")
        try:
            frame = await link.read_frame(find_response, self.spec.timeout_s)
            return parse_response(frame, command)
        except DeviceSilent as err:
            raise DeviceSilent(f"{err} to {command}") from err
        except AtError as err:
            raise AtError(f"{command}: {err}") from err

    async def close(self) -> None:
        self._link.close()


def _part(response: Response, command: str) -> Response:
    """The lines of a chained answer that belong to ``command`` (by their prefix)."""
    prefix = command[2:].rstrip("?") + ":"  # "AT+CREG?" → "+CREG:"
    lines = tuple(line for line in response.lines if line.upper().startswith(prefix))
    return Response(command, lines, response.final)


KIND: Final = DriverKind(
    name="at_modem",
    create=ModemDriver,
    parse_options=parse_options,
    default_baudrate=115200,
)
