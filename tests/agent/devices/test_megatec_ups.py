"""Megatec/Q1 UPS: the pure parser on the spec's frames, the garbage invariant, the driver.

The frames come from the Megatec spec (NUT's ``protocols/megatec.txt``) and
NUT's ``nutdrv_qx_megatec.c`` (its comment and testing vectors).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.devices.base import DeviceGone, DeviceSilent, DeviceSpec
from agent.devices.megatec_ups import (
    KIND,
    MegatecError,
    MegatecUpsDriver,
    find_frame,
    parse_identity,
    parse_q1,
    parse_ratings,
    regulation,
)
from agent.sim.ups import BITS, UpsSimulator, UpsState
from tests.agent.devices.simproc import simulate

SPEC_Q1 = b"(208.4 140.0 208.4 034 59.9 2.05 35.0 00110000\r"  # Megatec spec example
NUT_Q1 = b"(226.0 195.0 226.0 014 49.0 27.5 30.0 00001000\r"  # nutdrv_qx_megatec.c comment
NUT_TEST_Q1 = b"(215.0 195.0 230.0 014 49.0 22.7 30.0 00000000\r"  # its testing vector
NUT_F = b"#230.0 000 024.0 50.0\r"
NUT_I = b"#NOT_A_LIVE_UPS  TESTING    TESTING   \r"
NUT_I_DASHES = b"#-------------   ------     VT12046Q  \r"
VALID = (SPEC_Q1, NUT_Q1, NUT_TEST_Q1, NUT_F, NUT_I, NUT_I_DASHES, b"F\r", b"I\r")


# -- the pure part ---------------------------------------------------------


def test_spec_example() -> None:
    reading = parse_q1(SPEC_Q1)
    assert reading.flags == ("bypass_boost", "ups_failed")
    assert reading.state == "fault"
    assert reading.reason == (
        "the UPS reports a failure; bypass/boost/trim active — mains voltage out of range"
    )
    assert reading.attributes == {
        "input_voltage": 208.4,
        "input_fault_voltage": 140.0,
        "output_voltage": 208.4,
        "load_pct": 34,
        "frequency_hz": 59.9,
        "battery_voltage": 2.05,
        "temperature_c": 35.0,
        "ups_type": "online",
        "beeper": False,
        "regulation": "bypass",
    }


def test_nut_examples_are_ok_standby_and_online() -> None:
    standby = parse_q1(NUT_Q1)
    assert (standby.state, standby.flags, standby.reason) == ("ok", (), None)
    assert standby.attributes["ups_type"] == "standby"
    assert standby.attributes["battery_voltage"] == 27.5
    online = parse_q1(NUT_TEST_Q1)
    assert online.state == "ok" and online.attributes["ups_type"] == "online"
    assert online.attributes["output_voltage"] == 230.0


@pytest.mark.parametrize(
    ("bits", "flags", "state"),
    [
        ("10000000", ("on_battery",), "warning"),
        ("01000000", ("battery_low",), "fault"),
        ("11000000", ("on_battery", "battery_low"), "fault"),
        ("00100000", ("bypass_boost",), "warning"),
        ("00010000", ("ups_failed",), "fault"),
        ("00001000", (), "ok"),  # b3: standby UPS, not a flag
        ("00000100", ("test_in_progress",), "warning"),
        ("00000010", ("shutdown_active",), "fault"),
        ("00000001", (), "ok"),  # b0: beeper on, not a flag
        (
            "11111111",
            (
                "on_battery",
                "battery_low",
                "bypass_boost",
                "ups_failed",
                "test_in_progress",
                "shutdown_active",
            ),
            "fault",
        ),
    ],
)
def test_status_bits(bits: str, flags: tuple[str, ...], state: str) -> None:
    reading = parse_q1(b"(230.0 230.0 230.0 025 50.0 13.6 25.0 " + bits.encode() + b"\r")
    assert reading.flags == flags
    assert reading.state == state
    assert (reading.reason is None) == (state == "ok")
    assert reading.attributes["beeper"] is (bits[7] == "1")
    assert reading.attributes["ups_type"] == ("standby" if bits[4] == "1" else "online")


def test_unsupported_fields_are_absent() -> None:
    reading = parse_q1(b"(230.0 @@@.@ 230.0 025 50.0 @@@@ @@.@ 00001001\r")
    assert "input_fault_voltage" not in reading.attributes
    assert "battery_voltage" not in reading.attributes
    assert "temperature_c" not in reading.attributes
    assert reading.attributes["input_voltage"] == 230.0


@pytest.mark.parametrize(
    ("vin", "vout", "kind"),
    [
        (230.0, 100.0, None),
        (255.0, 232.0, "trim"),
        (230.0, 230.0, "bypass"),
        (195.0, 224.0, "boost"),
        (100.0, 150.0, None),
        (0.0, 230.0, None),
    ],
)
def test_regulation_follows_nut_ratios(vin: float, vout: float, kind: str | None) -> None:
    assert regulation(vin, vout) == kind
    q1 = f"({vin:05.1f} {vin:05.1f} {vout:05.1f} 025 50.0 13.6 25.0 00101001\r".encode()
    assert parse_q1(q1).attributes.get("regulation") == kind
    assert "bypass_boost" in parse_q1(q1).flags  # the bit counts even when the ratio is odd


def test_ratings_and_identity() -> None:
    assert parse_ratings(NUT_F) == {
        "rating_voltage": 230.0,
        "rating_current_a": 0,
        "rating_battery_voltage": 24.0,
        "rating_frequency_hz": 50.0,
    }
    assert parse_ratings(b"#230.0 @@@ 12.00 50.0\r") == {
        "rating_voltage": 230.0,
        "rating_battery_voltage": 12.0,
        "rating_frequency_hz": 50.0,
    }
    assert parse_identity(NUT_I) == {
        "manufacturer": "NOT_A_LIVE_UPS",
        "model": "TESTING",
        "firmware": "TESTING",
    }
    assert parse_identity(NUT_I_DASHES) == {"firmware": "VT12046Q"}


def test_echoes() -> None:
    assert parse_ratings(b"F\r") == {}
    assert parse_identity(b"I\r") == {}
    with pytest.raises(MegatecError, match="echoed Q1"):
        parse_q1(b"Q1\r")


@pytest.mark.parametrize(
    ("parse", "frame", "message"),
    [
        (parse_q1, SPEC_Q1[:-2] + b"\r", "46 bytes, expected 47"),
        (parse_q1, b")" + SPEC_Q1[1:], "does not start with '\\('"),
        (parse_q1, SPEC_Q1.replace(b" 034 ", b"-034 "), "not laid out"),
        (parse_q1, SPEC_Q1.replace(b"034", b"3.4"), "load_pct is not a number: '3.4'"),
        (parse_q1, SPEC_Q1.replace(b"59.9", b"5e-1"), "frequency_hz is not a number"),
        (parse_q1, SPEC_Q1.replace(b"00110000", b"0011000x"), "eight 0/1 characters"),
        (parse_q1, SPEC_Q1.replace(b"208.4 140", b"20\xb8.4 140"), "not ASCII"),
        (parse_q1, SPEC_Q1.replace(b"208.4 140", b"20\x01.4 140"), "control characters"),
        (parse_ratings, b"#230.0 000 024.0\r", "F answer has 3 fields"),
        (parse_ratings, b"(230.0 000 024.0 50.0\r", "is not '#"),
        (parse_ratings, b"#230.0 000 024.0 5O.0\r", "rating_frequency_hz is not a number"),
        (parse_identity, b"#MegaTecabcedfhi k130v12345 v3.400000\r", "company\\(15\\)"),
    ],
)
def test_malformed_answers(parse: Callable[[bytes], object], frame: bytes, message: str) -> None:
    with pytest.raises(MegatecError, match=message):
        parse(frame)


# -- the framer: whole, one byte at a time, trailing bytes ------------------


def test_framer_whole_and_with_trailing_bytes() -> None:
    assert find_frame(SPEC_Q1) == 47
    assert find_frame(SPEC_Q1 + NUT_F[:5]) == 47
    assert find_frame(NUT_F + SPEC_Q1) == len(NUT_F)
    assert find_frame(b"") is None


def test_framer_one_byte_at_a_time() -> None:
    stream = SPEC_Q1 + NUT_F + NUT_I + b"F\r"
    buffer, frames = b"", []
    for byte in stream:
        buffer += bytes([byte])
        size = find_frame(buffer)
        if size is not None:
            frames.append(buffer[:size])
            buffer = buffer[size:]
    assert frames == [SPEC_Q1, NUT_F, NUT_I, b"F\r"]
    assert parse_q1(frames[0]).flags == ("bypass_boost", "ups_failed")


def test_framer_gives_up_without_a_cr() -> None:
    assert find_frame(b"x" * 46) is None
    with pytest.raises(MegatecError, match="no CR within 47 bytes"):
        find_frame(b"x" * 47)


# -- Hypothesis: garbage, mutations, round trip ----------------------------


def _parse_all(frame: bytes) -> None:
    for parse in (parse_q1, parse_ratings, parse_identity):
        with contextlib.suppress(MegatecError):
            parse(frame)


def _stream(data: bytes, step: int) -> None:
    """Feed ``data`` to the framer ``step`` bytes at a time, parsing every frame."""
    buffer = b""
    for at in range(0, len(data), step):
        buffer += data[at : at + step]
        while True:
            try:
                size = find_frame(buffer)
            except MegatecError:
                buffer = b""  # what the driver does: the next query discards it
                break
            if size is None:
                break
            _parse_all(buffer[:size])
            buffer = buffer[size:]


@given(st.binary(max_size=300))
def test_garbage_is_parsed_or_a_megatec_error(data: bytes) -> None:
    _parse_all(data)
    _stream(data, len(data) or 1)
    _stream(data, 1)


@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 46), st.integers(0, 255)), max_size=4),
    st.binary(max_size=50),
)
def test_mutated_frames_are_parsed_or_a_megatec_error(
    frame: bytes, edits: list[tuple[int, int]], tail: bytes
) -> None:
    data = bytearray(frame)
    for at, value in edits:
        data[at % len(data)] = value
    _parse_all(bytes(data))
    _stream(bytes(data) + tail, 1)


@given(
    input_v=st.integers(0, 9999).map(lambda n: n / 10),
    output_v=st.integers(0, 9999).map(lambda n: n / 10),
    load=st.integers(0, 999),
    frequency=st.integers(0, 999).map(lambda n: n / 10),
    temperature=st.integers(0, 999).map(lambda n: n / 10),
    bits=st.sets(st.sampled_from(sorted(BITS))),
)
def test_round_trip_through_the_simulators_encoder(
    input_v: float, output_v: float, load: int, frequency: float, temperature: float, bits: set[str]
) -> None:
    state = UpsState(input_v, output_v, load, frequency, temperature, bits)
    reading = parse_q1(state.q1())
    expected = {
        "on_battery": "on_battery",
        "battery_low": "battery_low",
        "bypass": "bypass_boost",
        "ups_failed": "ups_failed",
        "test": "test_in_progress",
        "shutdown": "shutdown_active",
    }
    assert reading.flags == tuple(flag for bit, flag in expected.items() if bit in bits)
    attributes = reading.attributes
    assert attributes["input_voltage"] == input_v
    assert attributes["output_voltage"] == output_v
    assert attributes["load_pct"] == load
    assert attributes["frequency_hz"] == frequency
    assert attributes["temperature_c"] == temperature
    assert attributes["ups_type"] == ("standby" if "standby" in bits else "online")
    assert attributes["beeper"] is ("beeper" in bits)
    if "bypass" in bits:
        assert attributes.get("regulation") == regulation(input_v, output_v)


# -- the driver against the simulator --------------------------------------


def test_kind() -> None:
    assert KIND.name == "megatec_ups"
    assert KIND.default_baudrate == 2400
    assert KIND.parse_options is None  # no options of its own
    assert KIND.port_kind == "path"


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[UpsSimulator]:
    s = UpsSimulator(tmp_path / "ttyUPS")
    s._loop = asyncio.get_running_loop()
    s.plug()
    yield s
    s.unplug()


def make_driver(port: Path | str, timeout_s: float = 2.0) -> MegatecUpsDriver:
    spec = DeviceSpec(
        name="ups", kind="megatec_ups", port=str(port), baudrate=2400, timeout_s=timeout_s
    )
    return MegatecUpsDriver(spec)


@pytest.fixture
async def driver(sim: UpsSimulator) -> AsyncIterator[MegatecUpsDriver]:
    d = make_driver(sim.link)
    yield d
    await d.close()


async def test_normal_ups(driver: MegatecUpsDriver) -> None:
    reading = await driver.poll()
    assert (reading.state, reading.flags, reading.reason) == ("ok", (), None)
    assert reading.attributes == {
        "input_voltage": 230.0,
        "input_fault_voltage": 230.0,
        "output_voltage": 230.0,
        "load_pct": 25,
        "frequency_hz": 50.0,
        "battery_voltage": 13.6,
        "temperature_c": 25.0,
        "ups_type": "standby",
        "beeper": True,
        "rating_voltage": 230.0,
        "rating_current_a": 4,
        "rating_battery_voltage": 12.0,
        "rating_frequency_hz": 50.0,
        "manufacturer": "POSMON",
        "model": "SIM-650VA",
        "firmware": "1.0.0",
    }


@pytest.mark.parametrize(
    ("commands", "flags", "state", "attributes"),
    [
        (["on_battery"], ("on_battery",), "warning", {"input_voltage": 0.0}),
        (["battery_low"], ("battery_low",), "fault", {"battery_voltage": 10.6}),
        (["on_battery", "battery_low"], ("on_battery", "battery_low"), "fault", {}),
        (["bypass"], ("bypass_boost",), "warning", {"regulation": "boost"}),
        (["bypass trim"], ("bypass_boost",), "warning", {"regulation": "trim"}),
        (["bypass bypass"], ("bypass_boost",), "warning", {"regulation": "bypass"}),
        (["ups_failed"], ("ups_failed",), "fault", {}),
        (["test"], ("test_in_progress",), "warning", {}),
        (["shutdown"], ("shutdown_active",), "fault", {}),
        (["load 87"], (), "ok", {"load_pct": 87}),
        (["voltage 198.5"], (), "ok", {"input_voltage": 198.5}),
        (["type online"], (), "ok", {"ups_type": "online", "battery_voltage": 2.27}),
        (["beeper off"], (), "ok", {"beeper": False}),
    ],
)
async def test_faults(
    sim: UpsSimulator,
    driver: MegatecUpsDriver,
    commands: list[str],
    flags: tuple[str, ...],
    state: str,
    attributes: dict[str, object],
) -> None:
    assert (await driver.poll()).state == "ok"
    for line in commands:
        sim.command(line)
    reading = await driver.poll()
    assert reading.flags == flags
    assert reading.state == state
    assert (reading.reason is None) == (state == "ok")
    for key, value in attributes.items():
        assert reading.attributes[key] == value
    assert reading.attributes["model"] == "SIM-650VA"  # identity kept between polls
    sim.command("ok")
    assert (await driver.poll()).state == "ok"


async def test_ratings_and_identity_are_asked_once_per_connection(
    sim: UpsSimulator, driver: MegatecUpsDriver
) -> None:
    for _ in range(3):
        await driver.poll()
    assert list(sim.requests).count(b"F") == 1
    assert list(sim.requests).count(b"I") == 1
    assert list(sim.requests).count(b"Q1") == 3
    sim.command("unplug")
    with pytest.raises(DeviceGone):
        await driver.poll()
    sim.command("replug")
    reading = await driver.poll()
    assert reading.state == "ok" and reading.attributes["firmware"] == "1.0.0"
    assert list(sim.requests).count(b"F") == 2
    assert list(sim.requests).count(b"I") == 2


class NoInfoUps(UpsSimulator):
    """A UPS that knows only Q1: it echoes F and I like any unknown command."""

    def answer(self, line: bytes) -> bytes:
        if line in (b"F", b"I"):
            self.requests.append(line)
            return line + b"\r"
        return super().answer(line)


async def test_a_ups_without_ratings_or_identity(tmp_path: Path) -> None:
    sim = NoInfoUps(tmp_path / "ttyUPS")
    sim._loop = asyncio.get_running_loop()
    sim.plug()
    driver = make_driver(sim.link)
    try:
        reading = await driver.poll()
        assert reading.state == "ok"
        assert "model" not in reading.attributes
        assert not any(key.startswith("rating_") for key in reading.attributes)
        assert reading.attributes["input_voltage"] == 230.0
        await driver.poll()
        assert list(sim.requests).count(b"F") == 1  # not asked again
    finally:
        await driver.close()
        sim.unplug()


async def test_silence_is_device_silent(sim: UpsSimulator) -> None:
    driver = make_driver(sim.link, timeout_s=0.3)
    try:
        sim.command("silence")
        with pytest.raises(DeviceSilent, match="no answer"):
            await driver.poll()
        sim.command("ok")
        assert (await driver.poll()).state == "ok"
    finally:
        await driver.close()


async def test_garbage_is_a_protocol_error(sim: UpsSimulator) -> None:
    driver = make_driver(sim.link, timeout_s=0.5)
    try:
        sim.command("garbage")
        for _ in range(5):
            with pytest.raises(MegatecError):
                await driver.poll()
        sim.command("ok")
        assert (await driver.poll()).state == "ok"  # the stale bytes were discarded
    finally:
        await driver.close()


async def test_missing_port_is_gone(tmp_path: Path) -> None:
    driver = make_driver(tmp_path / "nothing")
    with pytest.raises(DeviceGone, match="no such device"):
        await driver.poll()
    await driver.close()


# -- through the real `python -m agent simulate ups` -----------------------


async def test_through_the_simulate_command(tmp_path: Path) -> None:
    link = tmp_path / "ttyUPS"
    async with simulate("ups", link) as sim:
        assert "on_battery" in sim.help
        driver = make_driver(link)
        try:
            assert (await driver.poll()).state == "ok"
            assert await sim.say("on_battery") == "ok on_battery set"
            assert await sim.say("battery_low") == "ok battery_low set"
            reading = await driver.poll()
            assert reading.flags == ("on_battery", "battery_low")
            assert reading.reason == (
                "battery low — the UPS will shut down soon; on battery — mains power failed"
            )
            assert (await sim.say("load lots")).startswith("error load takes a number")
            assert (await sim.say("explode")).startswith("error unknown command explode")
            assert await sim.say("unplug") == "ok unplugged"
            with pytest.raises(DeviceGone):
                await driver.poll()
            assert (await sim.say("replug")).startswith(f"ok plugged in at {link} -> /dev/pts/")
            assert (await driver.poll()).flags == ("on_battery", "battery_low")
            assert await sim.say("ok") == "ok all faults cleared"
            assert (await driver.poll()).state == "ok"
        finally:
            await driver.close()
        assert await sim.end_input() == 0
    assert not link.exists()
