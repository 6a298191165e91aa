"""The ESC/POS printer driver: the status parser on documented bytes, and the driver
against the printer simulator (in process and through ``python -m agent simulate``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.configkit import Section
from agent.devices.base import DeviceGone, DeviceSilent, DeviceSpec, Reading
from agent.devices.escpos_printer import (
    FLAGS,
    KIND,
    EscposError,
    EscposPrinterDriver,
    StatusFramer,
    check_reply,
    parse_options,
    parse_status,
    status_request,
)
from agent.sim.printer import PrinterSimulator
from tests.agent.devices.simproc import simulate

REPO = Path(__file__).resolve().parents[3]

# The four replies (to DLE EOT 1, 2, 3, 4) for each condition, from the bit
# tables in /work/shared/serial_protocols.md §1 (Epson TM-U220A pp. 54–55):
# 0x12 all clear, 0x1A offline, 0x1E near end, 0x72/0x7E paper end.
FRAMES: dict[str, tuple[bytes, tuple[str, ...], str, str | None]] = {
    "clear": (b"\x12\x12\x12\x12", (), "ok", None),
    "near_end": (b"\x12\x12\x12\x1e", ("paper_near_end",), "warning", "paper near end"),
    "paper_end": (
        b"\x1a\x32\x12\x7e",
        ("offline", "paper_near_end", "paper_end"),
        "fault",
        "paper end — replace the roll",
    ),
    "paper_end_no_near_end_bits": (
        b"\x1a\x32\x12\x72",
        ("offline", "paper_end"),
        "fault",
        "paper end — replace the roll",
    ),
    "cover_open": (b"\x1a\x16\x12\x12", ("offline", "cover_open"), "fault", "cover open"),
    "offline": (b"\x1a\x12\x12\x12", ("offline",), "fault", "offline — the printer is not"),
    "feeding": (b"\x1a\x1a\x12\x12", ("offline",), "fault", "offline — paper is being fed"),
    "recoverable": (b"\x1a\x52\x16\x12", ("offline",), "fault", "offline — recoverable error"),
    "cutter": (b"\x1a\x52\x1a\x12", ("offline", "cutter_error"), "fault", "cutter error"),
    "unrecoverable": (
        b"\x1a\x52\x32\x12",
        ("offline", "unrecoverable_error"),
        "fault",
        "unrecoverable error",
    ),
    "auto_recoverable": (
        b"\x1a\x52\x52\x12",
        ("offline", "auto_recoverable_error"),
        "fault",
        "temporary error",
    ),
    "cover_open_and_near_end": (
        b"\x1a\x16\x12\x1e",
        ("offline", "cover_open", "paper_near_end"),
        "fault",
        "cover open — close the printer cover; paper near end — have a new roll ready",
    ),
    "only_one_near_end_bit": (b"\x12\x12\x12\x16", ("paper_near_end",), "warning", "near end"),
}


# -- the pure part ------------------------------------------------------------


def test_requests_are_dle_eot_n() -> None:
    assert [status_request(n) for n in (1, 2, 3, 4)] == [
        b"\x10\x04\x01",
        b"\x10\x04\x02",
        b"\x10\x04\x03",
        b"\x10\x04\x04",
    ]
    with pytest.raises(ValueError):
        status_request(5)


@pytest.mark.parametrize("name", FRAMES)
def test_documented_frames_whole_and_byte_at_a_time(name: str) -> None:
    frame, flags, state, reason = FRAMES[name]
    whole = parse_status(frame)
    assert whole.flags == flags and whole.state == state
    if reason is None:
        assert whole.reason is None
    else:
        assert whole.reason is not None and reason in whole.reason
    assert whole.attributes["status_bytes"] == frame.hex(" ")

    framer = StatusFramer()
    got: list[Reading] = []
    for i, byte in enumerate(frame):
        assert framer.pending == i and framer.expecting == i + 1
        got += framer.feed(bytes([byte]))
    assert got == [whole] and framer.pending == 0


def test_paper_end_reason_names_the_cause_not_offline_nor_near_end() -> None:
    reading = parse_status(b"\x1a\x32\x12\x7e")
    assert reading.reason == "paper end — replace the roll"


def test_attributes_are_flat_scalars() -> None:
    reading = parse_status(b"\x1e\x5a\x16\x12")  # pin 3 high, feeding, error, recoverable
    assert reading.attributes == {
        "status_bytes": "1e 5a 16 12",
        "drawer_pin3_high": True,
        "paper_feeding": True,
        "error_occurred": True,
        "recoverable_error": True,
    }


@pytest.mark.parametrize("byte", [0x00, 0x10, 0x13, 0x11, 0x41, 0x92, 0x16 | 0x80, 0xFF])
def test_a_byte_with_wrong_fixed_bits_is_a_protocol_error_naming_it(byte: int) -> None:
    with pytest.raises(EscposError, match=f"0x{byte:02x} in answer to DLE EOT 3"):
        check_reply(3, byte)
    with pytest.raises(EscposError, match=f"0x{byte:02x} in answer to DLE EOT 2"):
        parse_status(bytes([0x12, byte, 0x12, 0x12]))


def test_framer_starts_over_after_an_error() -> None:
    framer = StatusFramer()
    assert framer.feed(b"\x12\x12") == []
    with pytest.raises(EscposError, match="DLE EOT 3"):
        framer.feed(b"\x00")
    assert framer.pending == 0
    assert framer.feed(b"\x12\x12\x12\x12")[0].state == "ok"


def test_trailing_bytes() -> None:
    with pytest.raises(EscposError, match="expected 4 status bytes, got 5"):
        parse_status(b"\x12\x12\x12\x12\x12")
    with pytest.raises(EscposError, match="got 3"):
        parse_status(b"\x12\x12\x12")
    framer = StatusFramer()
    (reading,) = framer.feed(b"\x12\x12\x12\x1e\x1a\x16")  # a reading, then the next begins
    assert reading.state == "warning" and framer.pending == 2 and framer.expecting == 3
    (second,) = framer.feed(b"\x12\x12")
    assert second.flags == ("offline", "cover_open")


@given(st.binary(max_size=40))
def test_garbage_whole_is_a_reading_or_our_error(data: bytes) -> None:
    try:
        reading = parse_status(data)
    except EscposError:
        return
    assert reading.state in ("ok", "warning", "fault")
    assert all(f in FLAGS for f in reading.flags)


@given(st.binary(max_size=40))
def test_garbage_byte_at_a_time_is_readings_or_our_error(data: bytes) -> None:
    framer = StatusFramer()
    try:
        for byte in data:
            for reading in framer.feed(bytes([byte])):
                assert reading.flags == tuple(f for f in FLAGS if f in reading.flags)
                assert reading.state == "ok" or reading.reason
    except EscposError:
        pass


@given(st.lists(st.integers(0, 255).map(lambda b: (b & ~0x93) | 0x12), min_size=4, max_size=4))
def test_every_valid_status_set_parses(raw: list[int]) -> None:
    reading = parse_status(bytes(raw))
    assert (reading.state == "ok") == (not reading.flags)
    assert (reading.state == "warning") == (reading.flags == ("paper_near_end",))


def test_kind_and_options() -> None:
    assert KIND.name == "escpos_printer" and KIND.default_baudrate == 9600
    assert KIND.port_kind == "path" and KIND.create is EscposPrinterDriver
    sec = Section("agent.toml", "device[0]", {"name": "receipt"})
    assert parse_options(sec, Path(".")) is None
    assert sec.known == []  # reads no key of its own


# -- the driver against the in-process simulator -------------------------------


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[PrinterSimulator]:
    s = PrinterSimulator(tmp_path / "ttyPRINTER")
    s._loop = asyncio.get_running_loop()
    s.plug()
    yield s
    s.unplug()


@pytest.fixture
async def driver(sim: PrinterSimulator) -> AsyncIterator[EscposPrinterDriver]:
    d = EscposPrinterDriver(_spec(sim.link))
    yield d
    await d.close()


def _spec(port: Path, timeout_s: float = 2.0) -> DeviceSpec:
    return DeviceSpec(name="receipt", kind="escpos_printer", port=str(port), timeout_s=timeout_s)


# fault → (flags, state, words in the reason)
EXPECTED: dict[str, tuple[tuple[str, ...], str, str | None]] = {
    "ok": ((), "ok", None),
    "paper_near_end": (("paper_near_end",), "warning", "paper near end — have a new roll ready"),
    "paper_end": (("offline", "paper_near_end", "paper_end"), "fault", "paper end — replace"),
    "cover_open": (("offline", "cover_open"), "fault", "cover open — close the printer cover"),
    "offline": (("offline",), "fault", "offline — the printer is not accepting data"),
    "cutter_error": (("offline", "cutter_error"), "fault", "cutter error"),
    "recoverable_error": (("offline",), "fault", "offline — recoverable error"),
    "unrecoverable_error": (("offline", "unrecoverable_error"), "fault", "unrecoverable error"),
    "auto_recoverable_error": (("offline", "auto_recoverable_error"), "fault", "temporary error"),
}


def _check(reading: Reading, fault: str) -> None:
    flags, state, reason = EXPECTED[fault]
    assert reading.flags == flags
    assert reading.state == state
    if reason is None:
        assert reading.reason is None
    else:
        assert reading.reason is not None and reason in reading.reason


def test_every_simulator_fault_is_expected() -> None:
    assert set(EXPECTED) == {"ok", *PrinterSimulator.COMMANDS}


@pytest.mark.parametrize("fault", EXPECTED)
async def test_driver_reads_every_fault(
    sim: PrinterSimulator, driver: EscposPrinterDriver, fault: str
) -> None:
    _check(await driver.poll(), "ok")
    sim.command(fault)
    _check(await driver.poll(), fault)
    sim.command("ok")
    _check(await driver.poll(), "ok")


async def test_faults_combine(sim: PrinterSimulator, driver: EscposPrinterDriver) -> None:
    sim.command("paper_near_end")
    sim.command("cover_open")
    reading = await driver.poll()
    assert reading.flags == ("offline", "cover_open", "paper_near_end")
    assert reading.reason == (
        "cover open — close the printer cover; paper near end — have a new roll ready"
    )
    sim.command("cover_open off")
    assert (await driver.poll()).state == "warning"


async def test_silence_is_device_silent_naming_the_query(
    sim: PrinterSimulator, tmp_path: Path
) -> None:
    d = EscposPrinterDriver(_spec(sim.link, timeout_s=0.2))
    try:
        sim.command("silence")
        with pytest.raises(DeviceSilent, match=r"no answer to DLE EOT 1 \(printer status\)"):
            await d.poll()
        sim.command("ok")
        assert (await d.poll()).state == "ok"
    finally:
        await d.close()


class NoPaperSensor(PrinterSimulator):
    """An older model that does not answer DLE EOT 4."""

    QUERIES = (1, 2, 3)


async def test_an_unsupported_query_is_silent_and_named(tmp_path: Path) -> None:
    s = NoPaperSensor(tmp_path / "ttyOLD")
    s._loop = asyncio.get_running_loop()
    s.plug()
    d = EscposPrinterDriver(_spec(s.link, timeout_s=0.2))
    try:
        with pytest.raises(DeviceSilent, match=r"DLE EOT 4 .*may not support it"):
            await d.poll()
    finally:
        await d.close()
        s.unplug()


async def test_garbage_is_a_protocol_error(
    sim: PrinterSimulator, driver: EscposPrinterDriver
) -> None:
    sim.command("garbage")
    # A random byte passes the fixed-bit check one time in 16, so four of them
    # pass together one poll in 65536: ask three times.
    outcomes: list[Reading | EscposError] = []
    for _ in range(3):
        try:
            outcomes.append(await driver.poll())
        except EscposError as err:
            outcomes.append(err)
    assert any(isinstance(o, EscposError) for o in outcomes)
    assert all(isinstance(o, Reading) or "is not a status byte" in str(o) for o in outcomes)
    sim.command("ok")
    assert (await driver.poll()).state == "ok"


async def test_a_stale_reply_is_discarded_before_the_query(
    sim: PrinterSimulator, driver: EscposPrinterDriver
) -> None:
    assert (await driver.poll()).state == "ok"
    sim.command("cover_open")
    assert sim.master is not None
    os.write(sim.master, b"\x12\x12")  # a late answer, arriving between two polls
    for _ in range(500):  # the interval between polls: the link reads what arrives
        if driver._link._buffer:
            break
        await asyncio.sleep(0.01)
    assert driver._link._buffer
    _check(await driver.poll(), "cover_open")


# -- the driver against `python -m agent simulate printer` ---------------------


async def test_driver_through_the_simulate_command(tmp_path: Path) -> None:
    async with simulate("printer", tmp_path / "ttyPRINTER") as sim:
        assert "paper_end" in sim.help and "unplug" in sim.help
        driver = EscposPrinterDriver(_spec(sim.link))
        try:
            _check(await driver.poll(), "ok")
            for fault in EXPECTED:
                assert (await sim.say(fault)).startswith("ok ")
                _check(await driver.poll(), fault)
                assert (await sim.say("ok")).startswith("ok ")
            assert await sim.say("unplug") == "ok unplugged"
            with pytest.raises(DeviceGone):
                await driver.poll()
            assert (await sim.say("replug")).startswith("ok plugged in at")
            _check(await driver.poll(), "ok")
        finally:
            await driver.close()
