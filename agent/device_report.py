"""The devices part of ``posmon-agent diagnose``: every device polled once, in plain words.

Each configured device is polled once with its own driver (the same code
the daemon runs). A device held by another process — the running agent, or
the POS application — is reported as such, not as broken. Lines read like
"printer: fault — paper end — replace the roll".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .devices.base import DeviceSpec, Driver, Reading
from .devices.registry import driver_kind
from .devices.supervisor import poll_once

#: What a technician does about a state, when the driver's reason does not say.
NEXT_STEP = {
    "disconnected": "check its cable, USB connection and power",
    "busy": "another program has the port open (the running agent or the POS application)",
}


@dataclass(frozen=True, slots=True)
class DeviceCheck:
    spec: DeviceSpec
    reading: Reading
    trouble: str  # "reading", "gone", "busy", "silent", "garbage", "bug"

    @property
    def failing(self) -> bool:
        return self.reading.state in ("fault", "disconnected")


async def check_devices(
    specs: Sequence[DeviceSpec], create: Callable[[DeviceSpec], Driver] | None = None
) -> list[DeviceCheck]:
    make = create or (lambda spec: driver_kind(spec.kind).create(spec))

    async def one(spec: DeviceSpec) -> DeviceCheck:
        driver = make(spec)
        try:
            reading, trouble = await poll_once(spec, driver)
        finally:
            with contextlib.suppress(Exception):
                await driver.close()
        return DeviceCheck(spec, reading, trouble)

    return list(await asyncio.gather(*(one(s) for s in specs)))


def describe(check: DeviceCheck) -> str:
    r = check.reading
    text = f"{check.spec.name}: {r.state}"
    if r.flags:
        text += f" [{', '.join(r.flags)}]"
    if r.reason:
        text += f" — {r.reason}"
    step = NEXT_STEP.get(check.trouble if check.trouble == "busy" else r.state)
    if step:
        text += f"; {step}"
    return text


def render_devices(checks: Sequence[DeviceCheck]) -> list[str]:
    lines = []
    for check in checks:
        mark = {"ok": "ok  ", "warning": "warn"}.get(check.reading.state, "FAIL")
        lines.append(f"  {mark}  {check.spec.kind:<18} {describe(check)}")
    return lines


def devices_json(checks: Sequence[DeviceCheck]) -> list[dict[str, Any]]:
    return [
        {
            "name": c.spec.name,
            "kind": c.spec.kind,
            "port": c.spec.port,
            "state": c.reading.state,
            "flags": list(c.reading.flags),
            "reason": c.reading.reason,
            "attributes": dict(c.reading.attributes),
            "summary": describe(c),
        }
        for c in checks
    ]
