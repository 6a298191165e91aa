"""A UPS read from NUT's upsd over the network (kind ``nut_ups``).

The agent is a plain client of upsd (TCP, default port 3493; the wire format
is in :mod:`agent.devices.nut_net`). Each poll sends ``LIST VAR <ups>`` on a
connection kept open between polls (opened lazily, closed after any error so
the next poll starts afresh). When ``username`` is set, ``USERNAME`` and
``PASSWORD`` are sent first on every new connection. Without a configured
``ups``, the first UPS of ``LIST UPS`` is used.

``ups.status`` tokens → flags (vocabulary and states of :mod:`.ups_state`):

| token | meaning | flag |
|---|---|---|
| OB | on battery | ``on_battery`` |
| LB | battery low | ``battery_low`` |
| BYPASS, BOOST, TRIM | bypass, boost or trim (buck) active | ``bypass_boost`` |
| ALARM | the UPS raised an alarm (``ups.alarm`` says which) | ``ups_failed`` |
| CAL | battery calibration/test running | ``test_in_progress`` |
| FSD | forced shutdown | ``shutdown_active`` |
| OVER | overloaded | ``overload`` |
| RB | replace the battery | ``replace_battery`` |
| OFF | the UPS output is off | no flag; state fault |
| WAIT | upsd has no data from the driver yet | no flag; state disconnected |
| OL, CHRG, DISCHRG, HB | on line, charging, discharging, high battery | none (see ``ups_status``) |

States: ``ok``; ``warning``/``fault`` from the flags (a fault flag wins) and
OFF; ``disconnected`` when upsd answers but has no data from the UPS:

- ``ERR DATA-STALE``: the driver runs but lost contact with the UPS (upsd also
  says this when the driver stops answering for ``MAXAGE``, 15 s);
- ``ERR DRIVER-NOT-CONNECTED``: the driver is not running (upsd notices
  within a moment when it dies, and may say WAIT for that moment);
- ``WAIT``: upsd waits for the driver's first data.

These are readings, not errors: the device is known to be unreachable.
Other ``ERR`` answers are ``fault`` readings: ``UNKNOWN-UPS`` (the reason
names the UPS and lists those upsd has), ``ACCESS-DENIED`` and the
username/password codes, anything else as "upsd answered ERR …".

Errors (see :mod:`.base`): upsd not reachable (refused, reset, closed, no
route, name not resolved) → :class:`DeviceGone` "cannot reach upsd at
host:port"; no answer within ``timeout_s`` (connect, or one request) →
:class:`DeviceSilent`; a reply that is not NUT's protocol →
:class:`~.nut_net.NutError`. A connection kept from an earlier poll that
turns out closed (upsd restarted) is retried once on a new one.

Attributes, each only when upsd has it (and a number parses where one is
expected): ``ups_name``, ``ups_status`` (raw), ``ups_alarm``,
``manufacturer``, ``model``, ``firmware``, ``serial``, ``battery_charge_pct``,
``battery_runtime_s``, ``battery_voltage``, ``input_voltage``,
``frequency_hz`` (input), ``output_voltage``, ``load_pct``, ``temperature_c``
(the names ``megatec_ups`` uses where both have a value).

Options (``[[device]]`` keys): ``ups`` (upsd's name of the UPS; default the
first one upsd lists), ``username`` and ``password`` or ``password_file``
(its first line; both or neither). upsd 2.8 checks the password only for
commands that change something, which this client never sends; the
credentials are for servers that want them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from protocol.fields import Scalar

from .base import DeviceGone, DeviceSilent, DeviceSpec, DriverKind, Reading
from .nut_net import (
    DEFAULT_PORT,
    Err,
    ListReply,
    NutError,
    Reply,
    ReplyReader,
    encode_request,
    list_upses,
    list_vars,
    split_hostport,
)
from .ups_state import ups_reason, ups_state

if TYPE_CHECKING:
    from ..configkit import Section

#: ``ups.status`` token → flag, in the order flags are reported.
STATUS_FLAGS: Final[dict[str, str]] = {
    "OB": "on_battery",
    "LB": "battery_low",
    "BYPASS": "bypass_boost",
    "BOOST": "bypass_boost",
    "TRIM": "bypass_boost",
    "ALARM": "ups_failed",
    "CAL": "test_in_progress",
    "FSD": "shutdown_active",
    "OVER": "overload",
    "RB": "replace_battery",
}
FLAG_ORDER: Final = tuple(dict.fromkeys(STATUS_FLAGS.values()))

#: NUT variable → (attribute, conversion); a value that does not convert is left out.
ATTRIBUTES: Final[dict[str, tuple[str, Callable[[str], Scalar]]]] = {
    "ups.status": ("ups_status", str),
    "ups.alarm": ("ups_alarm", str),
    "ups.mfr": ("manufacturer", str),
    "ups.model": ("model", str),
    "ups.firmware": ("firmware", str),
    "ups.serial": ("serial", str),
    "battery.charge": ("battery_charge_pct", float),
    "battery.runtime": ("battery_runtime_s", lambda v: round(float(v))),
    "battery.voltage": ("battery_voltage", float),
    "input.voltage": ("input_voltage", float),
    "input.frequency": ("frequency_hz", float),
    "output.voltage": ("output_voltage", float),
    "ups.load": ("load_pct", float),
    "ups.temperature": ("temperature_c", float),
}

_UPS_NAME_RE: Final = re.compile(r"[!-~]{1,128}")
_LOGIN_CODES: Final = frozenset(
    {"USERNAME-REQUIRED", "PASSWORD-REQUIRED", "INVALID-USERNAME", "INVALID-PASSWORD"}
)


# ── the pure part ───────────────────────────────────────────────────────────


def attributes_from_vars(variables: Mapping[str, str]) -> dict[str, Scalar]:
    found: dict[str, Scalar] = {}
    for var, (name, convert) in ATTRIBUTES.items():
        text = variables.get(var)
        if text is None:
            continue
        try:
            value = convert(text.strip())
        except (ValueError, OverflowError):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        found[name] = value
    return found


def reading_from_vars(variables: Mapping[str, str], ups: str) -> Reading:
    """The reading for ``LIST VAR``'s variables of UPS ``ups``."""
    attributes: dict[str, Scalar] = {"ups_name": ups, **attributes_from_vars(variables)}
    tokens = variables.get("ups.status", "").split()
    if not tokens:
        reason = f"upsd gives no ups.status for UPS {ups!r}"
        return Reading("fault", attributes=attributes, reason=reason)
    present = {STATUS_FLAGS[t] for t in tokens if t in STATUS_FLAGS}
    flags = tuple(f for f in FLAG_ORDER if f in present)
    if "WAIT" in tokens:
        reason = f"upsd is waiting for the first data from the driver of UPS {ups!r}"
        return Reading("disconnected", flags, attributes, reason)
    state = ups_state(flags)
    reasons = []
    if "OFF" in tokens:
        state = "fault"
        reasons.append("the UPS output is off — the equipment on it has no power")
    if (words := ups_reason(flags)) is not None:
        reasons.append(words)
    alarm = variables.get("ups.alarm", "").strip()
    if "ups_failed" in flags and alarm:
        reasons.append(f"alarm: {alarm}")
    return Reading(state, flags, attributes, "; ".join(reasons) or None)


def reading_for_err(err: Err, request: str, ups: str, where: str) -> Reading:
    """The reading for upsd's ``ERR`` answer to ``request``."""
    code = err.code
    if code == "DATA-STALE":
        reason = (
            f"upsd at {where} has no fresh data for UPS {ups!r}: its driver lost contact "
            "with the UPS (ERR DATA-STALE) — check the UPS's cable and power"
        )
        return Reading("disconnected", reason=reason)
    if code == "DRIVER-NOT-CONNECTED":
        reason = (
            f"the NUT driver for UPS {ups!r} is not running on the upsd host {where} "
            "(ERR DRIVER-NOT-CONNECTED) — start it (upsdrvctl start)"
        )
        return Reading("disconnected", reason=reason)
    if code == "UNKNOWN-UPS":
        return Reading("fault", reason=f"upsd at {where} has no UPS named {ups!r}")
    if code == "ACCESS-DENIED":
        reason = (
            f"upsd at {where} denied access (ERR ACCESS-DENIED) — check the username and "
            "password, and that upsd lets this host in"
        )
        return Reading("fault", reason=reason)
    if code in _LOGIN_CODES:
        reason = f"upsd at {where} did not accept the login (ERR {code}) — check username/password"
        return Reading("fault", reason=reason)
    detail = f" {err.detail}" if err.detail else ""
    return Reading("fault", reason=f"upsd at {where} answered ERR {code}{detail} to {request}")


# ── options ─────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class NutOptions:
    ups: str | None = None  # None: the first UPS upsd lists
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_options(sec: Section, base: Path) -> NutOptions:
    from ..configkit import opt_path, opt_str

    ups = opt_str(sec, "ups", None)
    if ups is not None and not _UPS_NAME_RE.fullmatch(ups):
        raise sec.error("ups", f"must be upsd's name of the UPS (no spaces), got {ups!r}")
    username = opt_str(sec, "username", None)
    password = opt_str(sec, "password", None)
    password_file = opt_path(sec, "password_file", None, base=base)
    if password is not None and password_file is not None:
        raise sec.error("password_file", "give either password or password_file, not both")
    if password_file is not None:
        try:
            password = password_file.read_text().splitlines()[0]
        except (OSError, UnicodeDecodeError, IndexError) as err:
            why = "it is empty" if isinstance(err, IndexError) else f"cannot read it: {err}"
            raise sec.error("password_file", f"{password_file}: {why}") from err
    key = "password_file" if password_file is not None else "password"
    if (username is None) != (password is None):
        missing, given = ("username", key) if username is None else (key, "username")
        raise sec.error(missing, f"missing: {given} is set, and upsd wants both or neither")
    for name, value in (("username", username), (key, password)):
        if value is not None and any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise sec.error(name, "must not contain control characters or line breaks")
    return NutOptions(ups=ups, username=username, password=password)


# ── the driver ──────────────────────────────────────────────────────────────


class _Closed(DeviceGone):
    """upsd closed the connection (EOF, reset or broken pipe)."""


class NutUpsDriver:
    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self.options = spec.options if isinstance(spec.options, NutOptions) else NutOptions()
        self._bad_port: str | None = None
        try:
            self.host, self.port = split_hostport(spec.port)
        except ValueError as err:
            self.host, self.port = spec.port, DEFAULT_PORT
            self._bad_port = f"port {spec.port!r} is not upsd's address: {err}"
        self.where = (
            f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        )
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ups: str | None = None  # the UPS LIST UPS gave first, for this connection

    async def poll(self) -> Reading:
        if self._bad_port is not None:
            return Reading("fault", reason=self._bad_port)
        retried = False
        while True:
            reused = self._writer is not None
            try:
                return await self._poll()
            except _Closed:
                self._forget()
                if not reused or retried:
                    raise
                retried = True  # upsd may have restarted since the last poll: a new connection
            except BaseException:
                self._forget()
                raise

    async def close(self) -> None:
        writer = self._writer
        if writer is None:
            return
        with contextlib.suppress(OSError, RuntimeError):
            writer.write(b"LOGOUT\n")
        self._forget()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(self.spec.timeout_s):
                await writer.wait_closed()

    async def _poll(self) -> Reading:
        if self._writer is None:
            await self._connect()
            refused = await self._login()
            if refused is not None:
                self._forget()
                return refused
        ups = self.options.ups or self._ups
        if ups is None:
            reply = await self._list("UPS")
            if isinstance(reply, Err):
                return reading_for_err(reply, "LIST UPS", "?", self.where)
            names = list_upses(reply)
            if not names:
                return Reading("fault", reason=f"upsd at {self.where} serves no UPS")
            ups = self._ups = names[0]
        reply = await self._list("VAR", ups)
        if isinstance(reply, Err):
            reading = reading_for_err(reply, f"LIST VAR {ups}", ups, self.where)
            if reply.code == "UNKNOWN-UPS":
                self._ups = None
                reading = await self._name_the_upses(reading)
            return reading
        return reading_from_vars(list_vars(reply), ups)

    async def _name_the_upses(self, reading: Reading) -> Reading:
        """``reading`` with the names of the UPSes upsd does have added to its reason."""
        reply = await self._list("UPS")
        if isinstance(reply, Err):
            return reading
        names = list_upses(reply)
        has = f"it has {', '.join(repr(n) for n in names)}" if names else "it has none"
        return Reading(reading.state, reason=f"{reading.reason}; {has}")

    async def _login(self) -> Reading | None:
        """Send the username and password, if configured; a fault reading if upsd refuses."""
        if self.options.username is None or self.options.password is None:
            return None
        for command, value in (
            ("USERNAME", self.options.username),
            ("PASSWORD", self.options.password),
        ):
            reply = await self._request(command, value)
            if isinstance(reply, Err):
                return reading_for_err(reply, command, self.options.ups or "?", self.where)
        return None

    async def _connect(self) -> None:
        timeout = self.spec.timeout_s
        try:
            async with asyncio.timeout(timeout):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError as err:
            raise DeviceSilent(
                f"upsd at {self.where} did not accept a connection within {timeout:g} s"
            ) from err
        except socket.gaierror as err:
            raise DeviceGone(f"cannot resolve {self.host}: {err.strerror}") from err
        except ConnectionRefusedError as err:
            raise DeviceGone(
                f"cannot reach upsd at {self.where}: connection refused — is upsd running "
                "and listening there?"
            ) from err
        except OSError as err:
            raise DeviceGone(f"cannot reach upsd at {self.where}: {err.strerror or err}") from err

    async def _request(self, *words: str) -> Reply:
        assert self._reader is not None and self._writer is not None
        reader = ReplyReader(words)
        shown = "PASSWORD …" if words[0] == "PASSWORD" else " ".join(words)
        timeout = self.spec.timeout_s
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(encode_request(*words))
                await self._writer.drain()
                reply = None
                while reply is None:
                    data = await self._reader.read(65536)
                    if not data:
                        raise _Closed(f"upsd at {self.where} closed the connection")
                    reply = reader.feed(data)
        except TimeoutError as err:
            raise DeviceSilent(
                f"upsd at {self.where} did not answer {shown} within {timeout:g} s"
            ) from err
        except ConnectionError as err:
            raise _Closed(f"upsd at {self.where} closed the connection ({err})") from err
        except OSError as err:
            raise DeviceGone(f"lost upsd at {self.where}: {err.strerror or err}") from err
        if reader.rest:
            raise NutError(f"upsd sent more than its answer to {shown}")
        return reply

    async def _list(self, *what: str) -> ListReply | Err:
        reply = await self._request("LIST", *what)
        if not isinstance(reply, ListReply | Err):  # ReplyReader never gives OK to a LIST
            raise NutError(f"OK where LIST {' '.join(what)} was expected")
        return reply

    def _forget(self) -> None:
        """Close the connection (without waiting); the next poll opens a new one."""
        writer, self._reader, self._writer = self._writer, None, None
        self._ups = None
        if writer is not None:
            writer.close()


KIND: Final = DriverKind(
    name="nut_ups",
    create=NutUpsDriver,
    parse_options=parse_options,
    port_kind="hostport",
)
