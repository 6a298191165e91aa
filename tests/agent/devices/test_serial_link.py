"""SerialLink against a real pty simulator: frames, silence, unplug/replug, busy port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.devices.base import DeviceGone, DevicePortBusy, DeviceSilent
from agent.devices.serial_link import SerialLink
from agent.sim.pty import PtySimulator, UnknownCommand


class Upper(PtySimulator):
    """Answers every CR-terminated line in upper case."""

    NAME = "upper"
    COMMANDS = ("mute",)

    def respond(self, data: bytes) -> bytes:
        self._inbox += data
        out = b""
        while b"\r" in self._inbox:
            line, _, rest = bytes(self._inbox).partition(b"\r")
            self._inbox[:] = rest
            out += line.upper() + b"\r"
        return out

    def fault(self, command: str, args: list[str]) -> str:
        if command == "mute":
            self.silent = True
            return "muted"
        raise UnknownCommand(command)


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Upper]:
    s = Upper(tmp_path / "ttyUPPER")
    s._loop = asyncio.get_running_loop()
    s.plug()
    yield s
    s.unplug()


async def test_request_and_answer(sim: Upper) -> None:
    link = SerialLink(str(sim.link))
    link.open()
    try:
        await link.write(b"hello\rwor")
        assert await link.read_until(b"\r", 2) == b"HELLO\r"
        await link.write(b"ld\r")
        assert await link.read_until(b"\r", 2) == b"WORLD\r"
    finally:
        link.close()


async def test_silence_is_device_silent(sim: Upper) -> None:
    sim.command("silence")
    link = SerialLink(str(sim.link))
    link.open()
    await link.write(b"x\r")
    with pytest.raises(DeviceSilent, match="no answer"):
        await link.read_until(b"\r", 0.3)
    link.close()


async def test_unplug_is_gone_and_replug_is_found_again(sim: Upper) -> None:
    link = SerialLink(str(sim.link))
    link.open()
    sim.command("unplug")
    with pytest.raises(DeviceGone):
        await link.write(b"x\r")
        await link.read_until(b"\r", 2)
    assert not link.is_open
    with pytest.raises(DeviceGone, match="no such device"):
        link.open()
    sim.command("replug")
    link.open()
    await link.write(b"back\r")
    assert await link.read_until(b"\r", 2) == b"BACK\r"
    link.close()


async def test_a_second_opener_finds_the_port_busy(sim: Upper) -> None:
    first = SerialLink(str(sim.link))
    first.open()
    second = SerialLink(str(sim.link))
    with pytest.raises(DevicePortBusy, match="in use by another process"):
        second.open()
    first.close()
    second.open()
    second.close()


def test_commands_and_help(tmp_path: Path) -> None:
    s = Upper(tmp_path / "t")
    assert "mute" in s.help() and "unplug" in s.help()
    assert s.command("garbage") == "answering garbage" and s.garbage
    assert s.command("ok") == "all faults cleared" and not s.garbage
    with pytest.raises(UnknownCommand):
        s.command("explode")
