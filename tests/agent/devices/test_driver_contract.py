"""What every serial driver promises, checked against its own simulator.

One test per promise, parametrised over the four serial kinds (``nut_ups``
has no serial port; its upsd tests cover the same promises):

- a device that is unplugged raises DeviceGone on the next poll (and says
  "no such device" while it stays away); replugged, it is ok on the next poll;
- a port held by another program is DevicePortBusy, and the driver takes it
  once it is free;
- a device that answers nothing is DeviceSilent within the poll guard;
- ``close()`` releases the port.

The kinds' own tests check their protocol details and their reasons.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.configkit import Section
from agent.devices.base import DeviceGone, DevicePortBusy, DeviceSilent, DeviceSpec, Driver
from agent.devices.registry import driver_kind
from agent.devices.serial_link import SerialLink
from agent.devices.supervisor import POLL_GUARD
from agent.sim import create
from agent.sim.pty import PtySimulator

#: kind → (simulator, the kind's own config keys for the test)
KINDS = {
    "escpos_printer": ("printer", {}),
    "megatec_ups": ("ups", {}),
    "at_modem": ("modem", {}),
    "ecr_pinpad": ("pinpad", {"mode": "link"}),  # presence mode never opens the port
}


@pytest.fixture(params=sorted(KINDS))
async def pair(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[PtySimulator, Driver]]:
    kind_name = request.param
    sim_name, keys = KINDS[kind_name]
    sim = create(sim_name, tmp_path / f"tty-{sim_name}")
    sim._loop = asyncio.get_running_loop()
    sim.plug()
    kind = driver_kind(kind_name)
    options = None
    if kind.parse_options is not None:
        options = kind.parse_options(Section("test.toml", "device[0]", dict(keys)), tmp_path)
    spec = DeviceSpec(
        name=kind_name, kind=kind_name, port=str(sim.link), baudrate=kind.default_baudrate,
        timeout_s=0.3, options=options,
    )  # fmt: skip
    driver = kind.create(spec)
    yield sim, driver
    await driver.close()
    sim.unplug()


async def test_unplug_is_gone_and_replug_is_ok_on_the_next_poll(
    pair: tuple[PtySimulator, Driver],
) -> None:
    sim, driver = pair
    assert (await driver.poll()).state == "ok"
    sim.command("unplug")
    with pytest.raises(DeviceGone):
        await driver.poll()
    with pytest.raises(DeviceGone, match="no such device"):
        await driver.poll()
    sim.command("replug")
    assert (await driver.poll()).state == "ok"


async def test_a_port_held_by_another_program_is_busy_until_it_is_free(
    pair: tuple[PtySimulator, Driver],
) -> None:
    sim, driver = pair
    other = SerialLink(str(sim.link))
    other.open()
    try:
        with pytest.raises(DevicePortBusy, match="in use by another process"):
            await driver.poll()
    finally:
        other.close()
    assert (await driver.poll()).state == "ok"
    await driver.close()  # releases the port for the next opener
    other.open()
    other.close()


async def test_silence_is_device_silent_within_the_poll_guard(
    pair: tuple[PtySimulator, Driver],
) -> None:
    sim, driver = pair
    assert (await driver.poll()).state == "ok"
    sim.command("silence")
    with pytest.raises(DeviceSilent):
        async with asyncio.timeout(0.3 * POLL_GUARD + 1):
            await driver.poll()
    sim.command("ok")
    assert (await driver.poll()).state == "ok"
