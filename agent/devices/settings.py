"""The ``[[device]]`` list of the agent's config.

::

    [[device]]
    name = "printer"              # unique; default the kind
    kind = "escpos_printer"       # escpos_printer megatec_ups nut_ups at_modem ecr_pinpad
    port = "/dev/serial/by-id/usb-EPSON_TM-T20-if00"   # nut_ups: "host[:port]"
    baudrate = 9600               # default: the kind's usual speed
    interval_s = 10               # one status poll per interval
    timeout_s = 1                 # limit of one answer
    heartbeat_s = 300             # a device_status at least this often, even unchanged

Each kind reads its own further keys (see the README); a key that neither
the common part nor the kind knows is an error, as everywhere in the config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from ..configkit import Section, opt_float, opt_int, opt_str, reject_unknown, req_str
from .base import DeviceSpec
from .registry import KINDS, driver_kind

_NAME_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_BAUDRATES: Final = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)


def parse_devices(root: Section, base: Path) -> tuple[DeviceSpec, ...]:
    items = root.get("device")
    if items is None:
        return ()
    if not isinstance(items, list):
        raise root.error("device", "expected an array of tables: write each as [[device]]")
    specs: list[DeviceSpec] = []
    for index, item in enumerate(items):
        key = f"device[{index}]"
        if not isinstance(item, dict):
            raise root.error(key, "expected a table: write each device as [[device]]")
        sec = Section(root.file, key, item)
        spec = _parse_one(sec, base)
        reject_unknown(sec)
        if any(s.name == spec.name for s in specs):
            raise sec.error("name", f"another device is already named {spec.name!r}")
        if any(s.port == spec.port and s.kind != "ecr_pinpad" for s in specs):
            raise sec.error("port", f"another device already uses {spec.port}")
        specs.append(spec)
    return tuple(specs)


def _parse_one(sec: Section, base: Path) -> DeviceSpec:
    kind_name = req_str(sec, "kind")
    if kind_name not in KINDS:
        raise sec.error("kind", f"must be one of {', '.join(KINDS)}, got {kind_name!r}")
    kind = driver_kind(kind_name)
    name = opt_str(sec, "name", kind_name)
    if not _NAME_RE.fullmatch(name):
        raise sec.error("name", f"must be 1–64 characters from A–Z a–z 0–9 . _ : -, got {name!r}")
    port = req_str(sec, "port")
    if kind.port_kind == "path" and not port.startswith("/"):
        raise sec.error("port", f"expected a device path such as /dev/ttyUSB0, got {port!r}")
    if kind.port_kind == "hostport":
        from .nut_net import split_hostport

        try:
            split_hostport(port)
        except ValueError as err:
            raise sec.error("port", f"expected HOST or HOST:PORT, got {port!r} ({err})") from None
    baudrate = opt_int(sec, "baudrate", kind.default_baudrate)
    if kind.port_kind == "path" and baudrate not in _BAUDRATES:
        allowed = ", ".join(str(b) for b in _BAUDRATES)
        raise sec.error("baudrate", f"must be one of {allowed}, got {baudrate}")
    interval = opt_float(sec, "interval_s", 10.0, ge=0.1, le=3600)
    heartbeat = opt_float(sec, "heartbeat_s", 300.0, ge=1, le=86400)
    if heartbeat < interval:
        raise sec.error("heartbeat_s", f"must be ≥ interval_s ({interval:g}), got {heartbeat:g}")
    options = kind.parse_options(sec, base) if kind.parse_options is not None else None
    return DeviceSpec(
        name=name,
        kind=kind_name,
        port=port,
        baudrate=baudrate,
        interval_s=interval,
        timeout_s=opt_float(sec, "timeout_s", 1.0, ge=0.05, le=60),
        heartbeat_s=heartbeat,
        options=options,
    )
