"""PIN pad / payment terminal (kind ``ecr_pinpad``): is it there, and does it answer?

The PIN pad's serial port normally belongs to the POS application, and a
second reader would steal its bytes. So by default (``mode = "presence"``)
the agent never opens the port: it only checks that the PIN pad is there —

- with ``usb_id = "vvvv:pppp"``: a USB device with that vendor:product id
  exists under ``usb_sysfs`` (``*/idVendor`` and ``*/idProduct``);
- without: the device node at ``port`` exists (a by-id symlink must resolve
  to a character device).

Where the port is free (``mode = "link"``), the agent talks to the terminal
over its ECR link (:mod:`agent.devices.ecr_link`: ``STX data ETX LRC``,
ACK/NAK, retransmission) with a non-financial liveness check:

- ``liveness = "enq"`` (Ingenico Telium): ENQ → expect ACK, then EOT to
  close the session;
- ``liveness = "poll"`` (Transbank POLL ``0100``): send the framed
  ``poll_message`` → expect ACK; with ``poll_response = true`` also wait for
  the terminal's answer frame, check its LRC (NAK and take the
  retransmission if it is wrong) and ACK it.

Each wait is bounded by the device's ``timeout_s``; a NAK or no answer makes
us send again, up to ``retries`` more times.

States, flags and reasons:

| what happened | result |
|---|---|
| present / the terminal acknowledged | ``ok`` |
| … but only after retransmissions | ``ok``, flag ``link_errors`` |
| the terminal NAKs every try | ``fault``, flag ``rejected`` (1) |
| its answer fails our LRC check every try | ``fault``, flag ``bad_lrc`` (2) |
| not found (presence), or unplugged | :class:`DeviceGone` → disconnected |
| no answer after every try | :class:`DeviceSilent` (3) |
| the POS application holds the port | :class:`DevicePortBusy` (use presence) |
| stray bytes on the link | :class:`EcrLinkError` |

Reasons: (1) "PIN pad rejects our frames (check LRC settings)", or for ENQ
"PIN pad answers NAK to ENQ (busy or refusing the link)"; (2) "PIN pad's
answers fail the LRC check (check lrc_init and lrc_includes_stx)";
(3) "PIN pad not answering (busy or not configured)".

Attributes: ``mode``; presence: ``usb_id``, ``manufacturer``, ``product``,
``usb_path``, ``tty`` (from sysfs, when there), ``device_node`` (the port's
resolved path); link: ``liveness``, ``retransmissions`` (frames sent again,
either way), ``response`` (the poll answer's text, at most 64 characters).

Options (the ``[[device]]`` table), with defaults: ``mode = "presence"``,
``usb_id`` (none), ``usb_sysfs = "/sys/bus/usb/devices"``, ``lrc_init = 0``
(Nexi: 0x7F = 127), ``lrc_includes_stx = false``, ``retries = 3``,
``liveness = "enq"``, ``poll_message = "0100"``, ``poll_response = false``.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from ..configkit import Section, opt_bool, opt_choice, opt_int, opt_path, opt_str
from .base import (
    DeviceGone,
    DevicePortBusy,
    DeviceSilent,
    DeviceSpec,
    DriverKind,
    Reading,
)
from .ecr_link import (
    EOT,
    TELIUM,
    Control,
    EcrLinkError,
    Frame,
    LrcRules,
    build_frame,
    parse_unit,
    split_unit,
)
from .serial_link import SerialLink

USB_SYSFS: Final = Path("/sys/bus/usb/devices")
USB_ID_RE: Final = re.compile(r"[0-9A-Fa-f]{4}:[0-9A-Fa-f]{4}")
POLL_MESSAGE_RE: Final = re.compile(r"[\x20-\x7e]{1,200}")

SILENT: Final = "PIN pad not answering (busy or not configured)"
REJECTED_FRAMES: Final = "PIN pad rejects our frames (check LRC settings)"
REJECTED_ENQ: Final = "PIN pad answers NAK to ENQ (busy or refusing the link)"
BAD_LRC: Final = "PIN pad's answers fail the LRC check (check lrc_init and lrc_includes_stx)"


@dataclass(frozen=True, slots=True)
class EcrPinpadOptions:
    mode: Literal["presence", "link"] = "presence"
    usb_id: tuple[int, int] | None = None
    usb_sysfs: Path = USB_SYSFS
    rules: LrcRules = TELIUM
    retries: int = 3
    liveness: Literal["enq", "poll"] = "enq"
    poll_message: bytes = b"0100"
    poll_response: bool = False


def parse_options(sec: Section, base: Path) -> EcrPinpadOptions:
    usb_text = opt_str(sec, "usb_id", None)
    usb_id = None
    if usb_text is not None:
        if not USB_ID_RE.fullmatch(usb_text):
            raise sec.error(
                "usb_id", f"must be vendor:product in hex (0b00:0080), got {usb_text!r}"
            )
        vendor, _, product = usb_text.partition(":")
        usb_id = (int(vendor, 16), int(product, 16))
    poll_text = opt_str(sec, "poll_message", "0100")
    if not POLL_MESSAGE_RE.fullmatch(poll_text):
        raise sec.error("poll_message", "must be 1–200 printable ASCII characters")
    return EcrPinpadOptions(
        mode=opt_choice(sec, "mode", "presence", ("presence", "link")),
        usb_id=usb_id,
        usb_sysfs=opt_path(sec, "usb_sysfs", USB_SYSFS, base=base),
        rules=LrcRules(
            init=opt_int(sec, "lrc_init", 0, ge=0, le=255),
            includes_stx=opt_bool(sec, "lrc_includes_stx", False),
        ),
        retries=opt_int(sec, "retries", 3, ge=0, le=10),
        liveness=opt_choice(sec, "liveness", "enq", ("enq", "poll")),
        poll_message=poll_text.encode("ascii"),
        poll_response=opt_bool(sec, "poll_response", False),
    )


# -- presence (pure over a sysfs tree; never opens the port) -----------------


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _hex(text: str | None) -> int | None:
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None


def find_usb(sysfs: Path, usb_id: tuple[int, int]) -> dict[str, str] | None:
    """What sysfs says of the first USB device with ``usb_id``, or None if there is none."""
    try:
        entries = sorted(sysfs.iterdir())
    except OSError:
        return None
    for entry in entries:
        vendor = _hex(_read_text(entry / "idVendor"))
        product = _hex(_read_text(entry / "idProduct"))
        if (vendor, product) != usb_id:
            continue
        found = {"usb_id": f"{usb_id[0]:04x}:{usb_id[1]:04x}", "usb_path": entry.name}
        for key in ("manufacturer", "product"):
            text = _read_text(entry / key)
            if text:
                found[key] = text
        ttys = sorted(
            tty.name for pattern in ("*:*/tty/tty*", "*:*/tty[A-Z]*") for tty in entry.glob(pattern)
        )
        if ttys:
            found["tty"] = ttys[0]
        return found
    return None


def device_node(port: str) -> str | None:
    """The resolved path of ``port`` if it is a character device, else None."""
    try:
        mode = os.stat(port).st_mode
    except (OSError, ValueError):
        return None
    return os.path.realpath(port) if stat.S_ISCHR(mode) else None


def presence(spec: DeviceSpec, options: EcrPinpadOptions) -> Reading:
    """ok with what was found, or DeviceGone; blocking (sysfs), run it in a thread."""
    attributes: dict[str, str] = {"mode": "presence"}
    node = device_node(spec.port) if spec.port else None
    if options.usb_id is not None:
        found = find_usb(options.usb_sysfs, options.usb_id)
        if found is None:
            vendor, product = options.usb_id
            where = options.usb_sysfs
            if not where.is_dir():
                raise DeviceGone(f"PIN pad not found: no USB bus at {where}")
            raise DeviceGone(f"PIN pad not found: no USB device {vendor:04x}:{product:04x}")
        attributes |= found
    elif node is None:
        if os.path.lexists(spec.port) and os.path.exists(spec.port):
            raise DeviceGone(f"PIN pad not found: {spec.port} is not a device node")
        raise DeviceGone(f"PIN pad not found: no such device {spec.port}")
    if node is not None:
        attributes["device_node"] = node
    return Reading(state="ok", attributes=attributes)


# -- the driver --------------------------------------------------------------


class EcrPinpadDriver:
    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self.options: EcrPinpadOptions = spec.options or EcrPinpadOptions()
        self._link = SerialLink(spec.port, baudrate=spec.baudrate)

    async def poll(self) -> Reading:
        if self.options.mode == "presence":
            return await asyncio.to_thread(presence, self.spec, self.options)
        try:
            self._link.open()
        except DevicePortBusy as err:
            raise DevicePortBusy(f'{err} (the POS application? use mode = "presence")') from err
        self._link.discard_input()
        if self.options.liveness == "enq":
            return await self._enq()
        return await self._poll_message()

    async def close(self) -> None:
        self._link.close()

    async def _next_unit(self) -> Control | Frame:
        unit = await self._link.read_frame(split_unit, self.spec.timeout_s)
        return parse_unit(unit, self.options.rules)

    async def _send(self, data: bytes, what: str) -> tuple[int, bool]:
        """Send ``data`` until it is ACKed: (retransmissions, acked); raise when silent."""
        nak = False
        for attempt in range(self.options.retries + 1):
            await self._link.write(data)
            try:
                unit = await self._next_unit()
            except DeviceSilent:
                nak = False
                self._link.discard_input()  # a frame cut short
                continue
            if unit is Control.ACK:
                return attempt, True
            if unit is Control.NAK:
                nak = True
                continue
            raise EcrLinkError(f"unexpected {_name(unit)} in answer to {what}")
        if nak:
            return self.options.retries, False
        raise DeviceSilent(SILENT)

    async def _enq(self) -> Reading:
        sent, acked = await self._send(bytes((Control.ENQ,)), "ENQ")
        if not acked:
            return _fault("rejected", REJECTED_ENQ, "enq", sent)
        await self._link.write(bytes((EOT,)))  # end the session we opened
        return _ok("enq", sent)

    async def _poll_message(self) -> Reading:
        frame = build_frame(self.options.poll_message, self.options.rules)
        sent, acked = await self._send(frame, "the poll message")
        if not acked:
            return _fault("rejected", REJECTED_FRAMES, "poll", sent)
        if not self.options.poll_response:
            return _ok("poll", sent)
        for attempt in range(self.options.retries + 1):
            try:
                unit = await self._next_unit()
            except DeviceSilent:
                if attempt:  # it stopped retransmitting after our NAK
                    return _fault("bad_lrc", BAD_LRC, "poll", sent + attempt)
                raise DeviceSilent("PIN pad acknowledged the poll but sent no answer") from None
            if not isinstance(unit, Frame):
                raise EcrLinkError(f"unexpected {_name(unit)} instead of the poll answer")
            if unit.lrc_ok:
                await self._link.write(bytes((Control.ACK,)))
                response = unit.data.decode("ascii", "replace")[:64]
                return _ok("poll", sent + attempt, response=response)
            await self._link.write(bytes((Control.NAK,)))
        return _fault("bad_lrc", BAD_LRC, "poll", sent + self.options.retries)


def _name(unit: Control | Frame) -> str:
    return unit.name if isinstance(unit, Control) else "frame"


def _ok(liveness: str, retransmissions: int, **extra: str) -> Reading:
    return Reading(
        state="ok",
        flags=("link_errors",) if retransmissions else (),
        attributes={
            "mode": "link",
            "liveness": liveness,
            "retransmissions": retransmissions,
            **extra,
        },
    )


def _fault(flag: str, reason: str, liveness: str, retransmissions: int) -> Reading:
    return Reading(
        state="fault",
        flags=(flag,),
        attributes={"mode": "link", "liveness": liveness, "retransmissions": retransmissions},
        reason=reason,
    )


KIND: Final = DriverKind(
    name="ecr_pinpad",
    create=EcrPinpadDriver,
    parse_options=parse_options,
    default_baudrate=9600,
)
