"""The device supervisor: device_status on change and as a heartbeat, every
error mapped to a state, unplug and replug each seen within one poll.

The device is a real pty simulator read through a real SerialLink by a
minimal driver (the protocol drivers have their own tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import pytest

from agent.devices.base import DeviceSpec, Reading
from agent.devices.serial_link import SerialLink
from agent.devices.supervisor import DeviceSupervisor
from agent.sim.pty import PtySimulator, UnknownCommand
from protocol import DeviceStatus, Event


class Lamp(PtySimulator):
    """Answers "?\\r" with its state word."""

    def __init__(self, link: Path) -> None:
        super().__init__(link)
        self.word = b"GREEN"

    def respond(self, data: bytes) -> bytes:
        self._inbox += data
        count = self._inbox.count(b"?\r")
        self._inbox.clear()
        return (self.word + b"\r") * count

    def fault(self, command: str, args: list[str]) -> str:
        if command in ("amber", "red"):
            self.word = command.upper().encode()
            return command
        raise UnknownCommand(command)

    def clear(self) -> None:
        self.word = b"GREEN"


class LampDriver:
    """Every answer is 6 bytes; anything else is garbage."""

    STATES: ClassVar = {b"GREEN\r": "ok", b"AMBER\r": "warning", b"REDDD\r": "fault"}

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self.link = SerialLink(spec.port)

    async def poll(self) -> Reading:
        self.link.open()
        self.link.discard_input()
        await self.link.write(b"?\r")
        answer = await self.link.read_exact(6, self.spec.timeout_s)
        if answer not in self.STATES:
            from agent.devices.base import DeviceProtocolError

            raise DeviceProtocolError(f"unexpected {answer[:20]!r}")
        state = self.STATES[answer]
        flags = () if state == "ok" else (answer.strip().decode().lower(),)
        return Reading(state, flags, {"volts": 12.0}, None if state == "ok" else "lamp is off")  # type: ignore[arg-type]

    async def close(self) -> None:
        self.link.close()


class Recorded:
    def __init__(self) -> None:
        self.events: list[DeviceStatus] = []

    async def __call__(self, events: list[Event]) -> None:
        self.events += [e for e in events if isinstance(e, DeviceStatus)]


@pytest.fixture
async def lamp(tmp_path: Path) -> AsyncIterator[Lamp]:
    sim = Lamp(tmp_path / "ttyLAMP")
    sim._loop = asyncio.get_running_loop()
    sim.plug()
    yield sim
    sim.unplug()


def supervisor(lamp: Lamp, heartbeat_s: float = 300) -> tuple[DeviceSupervisor, Recorded]:
    spec = DeviceSpec(name="lamp", kind="lamp", port=str(lamp.link), timeout_s=0.3,
                      heartbeat_s=heartbeat_s)  # fmt: skip
    rec = Recorded()
    return DeviceSupervisor((spec,), rec, create=LampDriver), rec  # type: ignore[arg-type]


async def test_status_on_change_only_then_heartbeat(lamp: Lamp) -> None:
    sup, rec = supervisor(lamp, heartbeat_s=300)
    runner = sup.runners[0]
    for _ in range(3):
        await sup.poll(runner)
    assert [(e.state, e.heartbeat) for e in rec.events] == [("ok", False)]
    assert rec.events[0].attributes == {"volts": 12.0} and rec.events[0].device_kind == "lamp"
    lamp.command("amber")
    await sup.poll(runner)
    await sup.poll(runner)
    assert [(e.state, e.flags) for e in rec.events][-1] == ("warning", ("amber",))
    assert len(rec.events) == 2 and rec.events[-1].reason == "lamp is off"
    runner.sent_at = -1e9  # as if the heartbeat interval had passed
    await sup.poll(runner)
    assert (rec.events[-1].state, rec.events[-1].heartbeat) == ("warning", True)
    status = sup.status_json()[0]
    assert status["state"] == "warning" and status["flags"] == ["amber"]
    await runner.driver.close()


async def test_unplug_and_replug_are_each_seen_on_the_next_poll(lamp: Lamp) -> None:
    sup, rec = supervisor(lamp)
    runner = sup.runners[0]
    await sup.poll(runner)
    lamp.command("unplug")
    await sup.poll(runner)
    assert rec.events[-1].state == "disconnected"
    await sup.poll(runner)  # still gone: no new event
    assert len(rec.events) == 2
    lamp.command("replug")
    await sup.poll(runner)
    assert rec.events[-1].state == "ok" and len(rec.events) == 3
    await runner.driver.close()


@pytest.mark.parametrize(
    ("command", "reason"),
    [("silence", "no answer from the device"), ("garbage", "the device answers garbage")],
)
async def test_silence_and_garbage_are_faults_with_reasons(
    lamp: Lamp, command: str, reason: str
) -> None:
    sup, rec = supervisor(lamp)
    runner = sup.runners[0]
    lamp.command(command)
    await sup.poll(runner)
    assert rec.events[-1].state == "fault"
    assert reason in (rec.events[-1].reason or "")
    lamp.command("ok")
    await sup.poll(runner)
    assert rec.events[-1].state == "ok"
    await runner.driver.close()


async def test_a_crashing_driver_is_a_fault_and_the_loop_goes_on(tmp_path: Path) -> None:
    class Broken:
        polls = 0

        async def poll(self) -> Reading:
            Broken.polls += 1
            raise RuntimeError("bug")

        async def close(self) -> None:
            pass

    spec = DeviceSpec(name="b", kind="x", port="/dev/null", interval_s=0.05)
    rec = Recorded()
    sup = DeviceSupervisor((spec,), rec, create=lambda s: Broken())
    stop = asyncio.Event()
    task = asyncio.create_task(sup.run(stop))
    async with asyncio.timeout(30):
        while Broken.polls < 3:
            await asyncio.sleep(0.02)
    stop.set()
    await task
    assert [e.state for e in rec.events] == ["fault"]
    assert rec.events[0].reason == "driver error: RuntimeError: bug"


async def test_device_text_goes_through_the_pan_guard(lamp: Lamp) -> None:
    class Chatty(LampDriver):
        async def poll(self) -> Reading:
            await super().poll()
            card = "4111 1111 1111 1111"
            return Reading("warning", (), {"operator": f"op {card}", "volts": 12.0}, f"said {card}")

    spec = DeviceSpec(name="lamp", kind="lamp", port=str(lamp.link), timeout_s=0.3)
    rec = Recorded()
    sup = DeviceSupervisor((spec,), rec, create=Chatty)
    await sup.poll(sup.runners[0])
    (event,) = rec.events
    assert event.attributes == {"operator": "op 4111 11** **** 1111", "volts": 12.0}
    assert event.reason == "said 4111 11** **** 1111"
    await sup.runners[0].driver.close()
