"""The [[device]] list of the agent config: common keys, each kind's own keys, mistakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import ConfigError, load_config
from agent.devices.base import DeviceSpec

HEAD = """
[agent]
terminal_id = "T-1"
store_id = "S-1"

[collector]
url = "http://c"
token = "tok"

[spool]
path = "spool.db"

[probes]
defaults = false
"""


def toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\\\", "\\\\\\\\").replace('"', '\\\\"') + '"'


def write(tmp_path: Path, *devices: dict[str, Any]) -> Path:
    text = HEAD
    for device in devices:
        text += "\n[[device]]\n" + "".join(f"{k} = {toml(v)}\n" for k, v in device.items())
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def load(tmp_path: Path, *devices: dict[str, Any]) -> tuple[DeviceSpec, ...]:
    return load_config(write(tmp_path, *devices)).devices


def error(tmp_path: Path, *devices: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, *devices))
    return info.value


def test_no_devices_is_fine(tmp_path: Path) -> None:
    assert load(tmp_path) == ()


def test_every_kind_with_its_defaults(tmp_path: Path) -> None:
    specs = load(
        tmp_path,
        {"kind": "escpos_printer", "port": "/dev/ttyUSB0"},
        {"kind": "megatec_ups", "port": "/dev/ttyS0"},
        {"kind": "nut_ups", "port": "127.0.0.1:3493", "ups": "rack"},
        {"kind": "at_modem", "port": "/dev/ttyUSB2", "weak_dbm": -95},
        {"kind": "ecr_pinpad", "port": "/dev/ttyACM0", "usb_id": "0b00:0080"},
    )
    by = {s.kind: s for s in specs}
    assert [s.name for s in specs] == list(by)  # the name defaults to the kind
    assert by["escpos_printer"] == DeviceSpec(
        name="escpos_printer", kind="escpos_printer", port="/dev/ttyUSB0", baudrate=9600
    )
    assert by["megatec_ups"].baudrate == 2400
    assert by["at_modem"].baudrate == 115200
    assert by["at_modem"].options.weak_dbm == -95
    assert by["nut_ups"].options.ups == "rack"
    assert by["ecr_pinpad"].options.mode == "presence"
    assert all((s.interval_s, s.timeout_s, s.heartbeat_s) == (10, 1, 300) for s in specs)


def test_common_keys(tmp_path: Path) -> None:
    (spec,) = load(
        tmp_path,
        {"name": "receipt", "kind": "escpos_printer", "port": "/dev/ttyS1", "baudrate": 19200,
         "interval_s": 2, "timeout_s": 0.5, "heartbeat_s": 60},
    )  # fmt: skip
    assert (spec.name, spec.baudrate, spec.interval_s, spec.timeout_s, spec.heartbeat_s) == (
        "receipt", 19200, 2.0, 0.5, 60.0,
    )  # fmt: skip


PRINTER = {"kind": "escpos_printer", "port": "/dev/ttyUSB0"}

MISTAKES: list[tuple[dict[str, Any], str, str]] = [
    ({"port": "/dev/x"}, "device[0].kind", "missing required key"),
    ({**PRINTER, "kind": "scanner"}, "device[0].kind", "must be one of escpos_printer"),
    ({"kind": "escpos_printer"}, "device[0].port", "missing required key"),
    ({**PRINTER, "port": "ttyUSB0"}, "device[0].port", "a device path"),
    ({**PRINTER, "baudrate": 1234}, "device[0].baudrate", "must be one of 1200"),
    ({**PRINTER, "interval_s": 0}, "device[0].interval_s", "≥ 0.1"),
    ({**PRINTER, "heartbeat_s": 5, "interval_s": 10}, "device[0].heartbeat_s", "≥ interval_s"),
    ({**PRINTER, "name": "a b"}, "device[0].name", "1–64 characters"),
    ({**PRINTER, "weak_dbm": -90}, "device[0].weak_dbm", "unknown key"),
    ({"kind": "at_modem", "port": "/dev/x", "weak_dbm": 5}, "device[0].weak_dbm", ""),
    ({"kind": "nut_ups", "port": "host:port"}, "device[0].port", "HOST:PORT"),
    ({"kind": "ecr_pinpad", "port": "/dev/x", "mode": "steal"}, "device[0].mode", "presence"),
]


@pytest.mark.parametrize(("device", "key", "reason"), MISTAKES, ids=[m[1] for m in MISTAKES])
def test_mistakes_name_the_device_and_key(
    tmp_path: Path, device: dict[str, Any], key: str, reason: str
) -> None:
    err = error(tmp_path, device)
    assert err.key == key and reason in err.reason, str(err)


def test_duplicates_are_refused(tmp_path: Path) -> None:
    err = error(tmp_path, PRINTER, {**PRINTER, "port": "/dev/ttyUSB1"})
    assert (err.key, err.reason) == (
        "device[1].name",
        "another device is already named 'escpos_printer'",
    )
    err = error(tmp_path, PRINTER, {**PRINTER, "name": "second"})
    assert (err.key, err.reason) == ("device[1].port", "another device already uses /dev/ttyUSB0")
