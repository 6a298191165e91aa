"""PinpadSimulator byte by byte, its commands, and `posmon-agent simulate pinpad` as a process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agent.devices.base import DeviceGone, DeviceSilent, DeviceSpec
from agent.devices.ecr_link import NEXI, LrcRules, build_frame, split_unit
from agent.devices.ecr_pinpad import REJECTED_FRAMES, EcrPinpadDriver, EcrPinpadOptions
from agent.devices.serial_link import SerialLink
from agent.sim.pinpad import PinpadSimulator
from agent.sim.pty import UnknownCommand

ACK, NAK, ENQ, EOT = b"\x06", b"\x15", b"\x05", b"\x04"
POLL = build_frame(b"0100")
ANSWER = build_frame(b"0110|00")
REPO = Path(__file__).resolve().parents[3]


async def eventually(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.01)


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[PinpadSimulator]:
    s = PinpadSimulator(tmp_path / "ttyPINPAD")
    s._loop = asyncio.get_running_loop()
    s.plug()
    yield s
    s.unplug()


@pytest.fixture
async def port(sim: PinpadSimulator) -> AsyncIterator[SerialLink]:
    link = SerialLink(str(sim.link))
    link.open()
    yield link
    link.close()


async def unit(port: SerialLink, timeout_s: float = 2.0) -> bytes:
    return await port.read_frame(split_unit, timeout_s)


async def test_enq_is_acked_and_eot_is_quiet(sim: PinpadSimulator, port: SerialLink) -> None:
    await port.write(ENQ)
    assert await unit(port) == ACK
    await port.write(EOT)
    with pytest.raises(DeviceSilent):
        await unit(port, 0.2)
    assert sim.log == ["ENQ", "EOT"]


async def test_poll_is_acked_with_an_answer_sent_again_after_nak(
    sim: PinpadSimulator, port: SerialLink
) -> None:
    await port.write(POLL)
    assert await unit(port) == ACK
    assert await unit(port) == ANSWER
    for _ in range(PinpadSimulator.RETRANSMITS):
        await port.write(NAK)
        assert await unit(port) == ANSWER
    await port.write(NAK)  # it gives up after 3 retransmissions
    with pytest.raises(DeviceSilent):
        await unit(port, 0.2)


async def test_an_acked_answer_is_not_sent_again(sim: PinpadSimulator, port: SerialLink) -> None:
    await port.write(POLL[:3])  # split across writes
    await port.write(POLL[3:])
    assert await unit(port) == ACK
    assert await unit(port) == ANSWER
    await port.write(ACK + NAK)
    with pytest.raises(DeviceSilent):
        await unit(port, 0.2)
    assert sim.log == ["frame 0100", "ACK", "NAK"]


async def test_other_messages_are_acked_bad_lrc_naked_junk_ignored(
    sim: PinpadSimulator, port: SerialLink
) -> None:
    await port.write(b"??" + build_frame(b"s") + POLL[:-1] + b"\x00" + b"\x0201" + POLL)
    assert await unit(port) == ACK  # 's'
    assert await unit(port) == NAK  # the POLL with a wrong LRC
    assert await unit(port) == ACK  # the POLL after the broken frame
    assert await unit(port) == ANSWER
    assert sim.log == ["junk", "junk", "frame s", "bad frame 0100", "junk", "frame 0100"]


async def test_faults(sim: PinpadSimulator, port: SerialLink) -> None:
    assert sim.command("nak") == "answering NAK to everything"
    await port.write(ENQ + POLL)
    assert [await unit(port), await unit(port)] == [NAK, NAK]
    sim.command("ok")
    sim.command("busy")
    await port.write(ENQ + POLL)
    with pytest.raises(DeviceSilent):
        await unit(port, 0.2)
    sim.command("ok")
    sim.command("bad_lrc")
    await port.write(POLL)
    assert await unit(port) == ACK
    answer = await unit(port)
    assert answer[:-1] == ANSWER[:-1] and answer[-1] == ANSWER[-1] ^ 0xFF
    await port.write(NAK)
    assert (await unit(port))[-1] == ANSWER[-1] ^ 0xFF  # the retransmission is as bad


async def test_lrc_rules_command(sim: PinpadSimulator, port: SerialLink) -> None:
    assert sim.command("lrc 0x7f") == "LRC from 0x7f over data + ETX"
    assert sim.rules == NEXI
    await port.write(POLL)
    assert await unit(port) == NAK
    await port.write(build_frame(b"0100", NEXI))
    assert await unit(port) == ACK
    assert await unit(port) == build_frame(b"0110|00", NEXI)
    assert sim.command("lrc 3 stx") == "LRC from 0x03 over data + ETX including STX"
    assert sim.rules == LrcRules(init=3, includes_stx=True)
    sim.command("ok")  # clears faults, keeps the rules
    assert sim.rules == LrcRules(init=3, includes_stx=True)


def test_commands_and_their_errors(tmp_path: Path) -> None:
    s = PinpadSimulator(tmp_path / "t")
    assert all(c in s.help() for c in ("busy", "nak", "bad_lrc", "lrc INIT [stx]", "replug"))
    for bad in ("lrc", "lrc 256", "lrc x", "lrc 1 etx", "lrc 1 stx more"):
        with pytest.raises(ValueError, match=r"lrc|0\.\.255"):
            s.command(bad)
    with pytest.raises(UnknownCommand):
        s.command("explode")
    s.command("busy")
    s.command("bad_lrc")
    s.command("ok")
    assert not (s.busy or s.nak or s.bad_lrc)


async def test_unplug_forgets_a_half_received_frame(sim: PinpadSimulator) -> None:
    port = SerialLink(str(sim.link))
    port.open()
    await port.write(POLL[:4])
    await eventually(lambda: sim._reader.pending == POLL[:4])
    sim.unplug()
    port.close()
    assert sim._reader.pending == b""
    sim.plug()
    port.open()
    await port.write(POLL)
    assert await unit(port) == ACK
    port.close()


# -- posmon-agent simulate pinpad, as a separate process ----------------------


class Controlled:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(10):
            return (await self.proc.stdout.readline()).decode().strip()

    async def say(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.line()


@pytest.fixture
async def process(tmp_path: Path) -> AsyncIterator[tuple[Controlled, Path]]:
    link = tmp_path / "ttyPINPAD"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "simulate",
        "pinpad",
        "--link",
        str(link),
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        yield Controlled(proc), link
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def link_spec(link: Path, **options: object) -> DeviceSpec:
    return DeviceSpec(
        name="pinpad",
        kind="ecr_pinpad",
        port=str(link),
        timeout_s=1.0,
        options=EcrPinpadOptions(mode="link", **options),  # type: ignore[arg-type]
    )


async def test_simulate_pinpad_process(process: tuple[Controlled, Path]) -> None:
    ctl, link = process
    first = await ctl.line()
    assert first.startswith(f"pinpad simulator: {link} -> /dev/pts/")
    assert "lrc INIT [stx]" in await ctl.line()
    enq = EcrPinpadDriver(link_spec(link, retries=1))
    poll = EcrPinpadDriver(link_spec(link, liveness="poll", poll_response=True))
    presence = EcrPinpadDriver(DeviceSpec(name="p", kind="ecr_pinpad", port=str(link)))
    try:
        assert (await enq.poll()).state == "ok"
        await enq.close()  # one opener at a time: the port is exclusive
        assert (await poll.poll()).attributes["response"] == "0110|00"
        await poll.close()
        assert await ctl.say("busy") == "ok busy: answering nothing"
        with pytest.raises(DeviceSilent):
            await enq.poll()
        assert await ctl.say("ok") == "ok all faults cleared"
        assert (await enq.poll()).state == "ok"
        await enq.close()
        assert await ctl.say("lrc 0x7f") == "ok LRC from 0x7f over data + ETX"
        assert (await poll.poll()).reason == REJECTED_FRAMES
        await poll.close()
        assert (await ctl.say("lrc 300")).startswith("error LRC initial value must be 0..255")
        assert await ctl.say("lrc 0") == "ok LRC from 0x00 over data + ETX"
        assert await ctl.say("unplug") == "ok unplugged"
        with pytest.raises(DeviceGone):
            await enq.poll()
        with pytest.raises(DeviceGone):
            await presence.poll()
        assert (await ctl.say("replug")).startswith(f"ok plugged in at {link} -> /dev/pts/")
        assert (await presence.poll()).state == "ok"
        assert (await enq.poll()).state == "ok"
    finally:
        await enq.close()
        await poll.close()
    assert await ctl.say("quit") == ""
    async with asyncio.timeout(10):
        assert await ctl.proc.wait() == 0
    assert not os.path.lexists(link)


# -- a real peer: pyTeliumManager (Ingenico Telium Caisse protocol) ------------


async def test_pytelium_manager_talks_to_the_simulator(sim: PinpadSimulator) -> None:
    """pyTeliumManager's ENQ/ACK/EOT check and a framed payment request (its own LRC).

    Runs where ``pip install pyteliummanager`` was done (not in the project's
    dev dependencies, so CI skips it).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its old pycountry warns on import
        telium = pytest.importorskip("telium", reason="pyteliummanager is not installed")

    def talk() -> tuple[bool, bool, str]:
        terminal = telium.Telium(str(sim.link), timeout=2)
        try:
            ask = telium.TeliumAsk.new_payment(12.5, payment_mode="debit", target_currency="EUR")
            return terminal.is_ok(), terminal.ask(ask), ask.encode()
        finally:
            terminal.close()

    ready, accepted, request = await asyncio.to_thread(talk)
    assert ready and accepted
    data = request[1:-1].encode("ascii")  # its frame: STX data ETX LRC
    assert data.endswith(b"\x03") and len(data) == 35  # 34 characters + ETX
    expected = ["ENQ", "EOT", "ENQ", f"frame {data[:-1].decode()}", "EOT"]
    await eventually(lambda: sim.log == expected)
    sim.command("busy")
    terminal = await asyncio.to_thread(telium.Telium, str(sim.link), timeout=0.3)
    try:
        assert not await asyncio.to_thread(terminal.is_ok)
    finally:
        terminal.close()
