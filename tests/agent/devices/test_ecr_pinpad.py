"""ecr_pinpad: the ECR framer, the options, presence (sysfs, device node) and the link mode.

Frames are hand-computed from the protocol notes: Transbank's POLL is
``STX "0100" ETX LRC`` with LRC = XOR of data + ETX (Telium's rule too);
Nexi starts the XOR from 0x7F. The driver runs against PinpadSimulator on a
real pty in the same event loop.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.configkit import ConfigError, Section, reject_unknown
from agent.devices.base import (
    DeviceError,
    DeviceGone,
    DevicePortBusy,
    DeviceProtocolError,
    DeviceSilent,
    DeviceSpec,
)
from agent.devices.ecr_link import (
    MAX_FRAME,
    NEXI,
    TELIUM,
    Control,
    EcrLinkError,
    Frame,
    FrameReader,
    LrcRules,
    build_frame,
    lrc,
    parse_unit,
    split_unit,
)
from agent.devices.ecr_pinpad import (
    BAD_LRC,
    KIND,
    REJECTED_ENQ,
    REJECTED_FRAMES,
    EcrPinpadDriver,
    EcrPinpadOptions,
    parse_options,
)
from agent.devices.serial_link import SerialLink
from agent.sim.pinpad import PinpadSimulator

POLL_FRAME = bytes.fromhex("02 30 31 30 30 03 02")  # "0100": 30^31^30^30^03 = 02
POLL_FRAME_NEXI = bytes.fromhex("02 30 31 30 30 03 7d")  # the same from 0x7F: 7F^02 = 7D


async def eventually(check: Callable[[], bool]) -> None:
    """Wait (at most 5 s) until the simulator has read what we wrote."""
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.01)


def drain(reader: FrameReader) -> list[object]:
    """Every unit the reader can give now; an error shows as ("error", message)."""
    out: list[object] = []
    while True:
        try:
            unit = reader.next_unit()
        except EcrLinkError as err:
            out.append(("error", str(err)))
            continue
        if unit is None:
            return out
        out.append(unit)


# -- the framer ---------------------------------------------------------------


def test_transbank_poll_frame() -> None:
    assert build_frame(b"0100") == POLL_FRAME
    assert lrc(b"0100") == 0x02


def test_nexi_starts_the_lrc_from_0x7f() -> None:
    assert LrcRules(init=0x7F) == NEXI
    assert build_frame(b"0100", NEXI) == POLL_FRAME_NEXI


def test_lrc_over_stx_too() -> None:
    assert build_frame(b"0100", LrcRules(includes_stx=True))[-1] == 0x02 ^ 0x02


def test_telium_lrc_is_the_xor_of_data_and_etx() -> None:
    # a 34-character Telium (Caisse/Concert protocol E) request: fixed-length ASCII
    data = b"01000000150100978          A010B10"
    assert len(data) == 34
    expected = functools.reduce(operator.xor, data + b"\x03", 0)
    frame = build_frame(data, TELIUM)
    assert frame == b"\x02" + data + b"\x03" + bytes((expected,))


def test_empty_data_has_etx_as_its_lrc() -> None:
    frame = build_frame(b"")
    assert frame == b"\x02\x03\x03"  # the LRC byte equals ETX: still one frame
    assert split_unit(frame) == 3
    assert parse_unit(frame) == Frame(data=b"", lrc=0x03, lrc_ok=True)


def test_build_frame_refuses_stx_or_etx_in_data() -> None:
    for data in (b"a\x02b", b"a\x03b", b"x" * MAX_FRAME):
        with pytest.raises(ValueError):
            build_frame(data)
    with pytest.raises(ValueError, match=r"0\.\.255"):
        LrcRules(init=256)


def test_parse_whole_frame() -> None:
    reader = FrameReader()
    reader.feed(POLL_FRAME)
    assert reader.next_unit() == Frame(data=b"0100", lrc=0x02, lrc_ok=True)
    assert reader.next_unit() is None


def test_parse_one_byte_at_a_time() -> None:
    reader = FrameReader()
    for byte in POLL_FRAME[:-1]:
        reader.feed(bytes((byte,)))
        assert reader.next_unit() is None
    reader.feed(POLL_FRAME[-1:])
    assert reader.next_unit() == Frame(data=b"0100", lrc=0x02, lrc_ok=True)


def test_parse_with_trailing_bytes() -> None:
    reader = FrameReader()
    reader.feed(b"\x06" + POLL_FRAME + b"\x15\x05\x04" + POLL_FRAME[:3])
    assert drain(reader) == [
        Control.ACK,
        Frame(data=b"0100", lrc=0x02, lrc_ok=True),
        Control.NAK,
        Control.ENQ,
        Control.EOT,
    ]
    assert reader.pending == POLL_FRAME[:3]


def test_wrong_lrc_is_a_frame_to_nak_not_an_error() -> None:
    assert parse_unit(POLL_FRAME[:-1] + b"\x7f") == Frame(data=b"0100", lrc=0x7F, lrc_ok=False)
    # a Nexi frame read under Telium rules, and the other way round
    assert not parse_unit(POLL_FRAME_NEXI, TELIUM).lrc_ok  # type: ignore[union-attr]
    assert parse_unit(POLL_FRAME_NEXI, NEXI).lrc_ok  # type: ignore[union-attr]


def test_stray_bytes_are_errors_and_reading_goes_on() -> None:
    reader = FrameReader()
    reader.feed(b"?\x06")
    with pytest.raises(EcrLinkError, match="stray byte"):
        reader.next_unit()
    assert reader.next_unit() is Control.ACK


def test_a_frame_cut_by_a_new_stx_is_broken_and_the_next_one_parses() -> None:
    reader = FrameReader()
    reader.feed(b"\x0201" + POLL_FRAME)
    assert drain(reader) == [
        ("error", "broken frame b'\\x0201' on the PIN pad link"),
        Frame(data=b"0100", lrc=0x02, lrc_ok=True),
    ]


def test_a_frame_without_etx_ends_at_max_frame() -> None:
    longest = build_frame(b"x" * (MAX_FRAME - 3))
    assert len(longest) == MAX_FRAME
    assert parse_unit(longest) == Frame(data=b"x" * (MAX_FRAME - 3), lrc=0x78 ^ 3, lrc_ok=True)
    reader = FrameReader()
    reader.feed(longest[:-2])
    assert reader.next_unit() is None  # may still end
    reader.feed(b"x")  # no room left for ETX + LRC
    with pytest.raises(EcrLinkError, match="broken frame"):
        reader.next_unit()
    assert reader.pending == b""


def test_split_unit_is_a_frame_finder() -> None:
    assert split_unit(b"") is None
    assert split_unit(b"\x02abc") is None
    assert split_unit(b"\x02abc\x03") is None  # the LRC byte is still to come
    assert split_unit(POLL_FRAME + b"\x06") == len(POLL_FRAME)
    assert split_unit(b"\x06" + POLL_FRAME) == 1


frame_data = st.binary(max_size=200).map(lambda b: b.replace(b"\x02", b"").replace(b"\x03", b""))
rules = st.builds(LrcRules, init=st.integers(0, 255), includes_stx=st.booleans())


@given(frame_data, rules)
def test_roundtrip(data: bytes, rules: LrcRules) -> None:
    frame = build_frame(data, rules)
    assert split_unit(frame) == len(frame)
    assert parse_unit(frame, rules) == Frame(data=data, lrc=frame[-1], lrc_ok=True)


@given(st.binary(max_size=2 * MAX_FRAME), rules)
def test_garbage_whole_or_byte_by_byte_gives_units_or_our_error(
    garbage: bytes, rules: LrcRules
) -> None:
    whole = FrameReader(rules)
    whole.feed(garbage)
    at_once = drain(whole)
    piecewise = FrameReader(rules)
    one_by_one: list[object] = []
    for byte in garbage:
        piecewise.feed(bytes((byte,)))
        one_by_one += drain(piecewise)
    assert one_by_one == at_once
    assert whole.pending == piecewise.pending
    for unit in at_once:
        assert isinstance(unit, Control | Frame | tuple)


@given(st.binary(max_size=300))
def test_parse_unit_never_raises_anything_else(unit: bytes) -> None:
    try:
        parse_unit(unit)
    except EcrLinkError as err:
        assert isinstance(err, DeviceProtocolError)


# -- options ------------------------------------------------------------------


def section(**table: object) -> Section:
    return Section("agent.toml", "device[0]", dict(table))


def test_options_defaults() -> None:
    assert parse_options(section(), Path("/etc/posmon")) == EcrPinpadOptions()
    assert EcrPinpadOptions().mode == "presence"
    assert KIND.name == "ecr_pinpad" and KIND.parse_options is parse_options


def test_options_all_keys(tmp_path: Path) -> None:
    sec = section(
        mode="link",
        usb_id="0B00:0080",
        usb_sysfs="sys",
        lrc_init=0x7F,
        lrc_includes_stx=True,
        retries=1,
        liveness="poll",
        poll_message="s",
        poll_response=True,
    )
    options = parse_options(sec, tmp_path)
    reject_unknown(sec)  # every key above was read
    assert options == EcrPinpadOptions(
        mode="link",
        usb_id=(0x0B00, 0x0080),
        usb_sysfs=tmp_path / "sys",
        rules=LrcRules(init=0x7F, includes_stx=True),
        retries=1,
        liveness="poll",
        poll_message=b"s",
        poll_response=True,
    )


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("mode", "open", "must be one of"),
        ("usb_id", "0b00-0080", "vendor:product in hex"),
        ("usb_id", "b00:80", "vendor:product in hex"),
        ("lrc_init", 256, "≤ 255"),
        ("lrc_includes_stx", 1, "true or false"),
        ("retries", -1, "≥ 0"),
        ("liveness", "ping", "must be one of"),
        ("poll_message", "01\x0300", "printable ASCII"),
    ],
)
def test_options_errors_name_the_key(key: str, value: object, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        parse_options(section(**{key: value}), Path("/"))
    assert caught.value.key == f"device[0].{key}"


# -- presence: a crafted sysfs tree -------------------------------------------


def spec(port: str, timeout_s: float = 2.0, **options: object) -> DeviceSpec:
    return DeviceSpec(
        name="pinpad",
        kind="ecr_pinpad",
        port=port,
        timeout_s=timeout_s,
        options=replace(EcrPinpadOptions(), **options),  # type: ignore[arg-type]
    )


def usb_device(sysfs: Path, name: str, vid: str, pid: str, **strings: str) -> Path:
    device = sysfs / name
    device.mkdir(parents=True)
    (device / "idVendor").write_text(vid + "\n")
    (device / "idProduct").write_text(pid + "\n")
    for key, text in strings.items():
        (device / key).write_text(text + "\n")
    return device


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "sys-bus-usb-devices"
    usb_device(root, "usb1", "1d6b", "0002", product="EHCI Host Controller")
    (root / "usb1:1.0").mkdir()  # an interface: no ids
    return root


async def test_usb_presence_present_absent_replugged(sysfs: Path, tmp_path: Path) -> None:
    driver = EcrPinpadDriver(
        spec(str(tmp_path / "ttyACM0"), usb_id=(0x0B00, 0x0080), usb_sysfs=sysfs)
    )
    with pytest.raises(DeviceGone, match="no USB device 0b00:0080"):
        await driver.poll()
    device = usb_device(sysfs, "1-1.2", "0b00", "0080", manufacturer="Ingenico", product="Lane")
    (device / "1-1.2:1.0" / "tty" / "ttyACM0").mkdir(parents=True)
    reading = await driver.poll()
    assert reading.state == "ok" and reading.flags == ()
    assert reading.attributes == {
        "mode": "presence",
        "usb_id": "0b00:0080",
        "usb_path": "1-1.2",
        "manufacturer": "Ingenico",
        "product": "Lane",
        "tty": "ttyACM0",
    }
    for child in sorted(device.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    device.rmdir()  # unplugged
    with pytest.raises(DeviceGone, match="PIN pad not found"):
        await driver.poll()
    usb_device(sysfs, "1-1.3", "0B00", "0080")  # back, on another port
    reading = await driver.poll()
    assert reading.state == "ok"
    assert reading.attributes["usb_path"] == "1-1.3"
    assert "product" not in reading.attributes
    await driver.close()


async def test_usb_presence_skips_unreadable_entries(sysfs: Path) -> None:
    usb_device(sysfs, "2-1", "zzzz", "0080")
    (sysfs / "stray-file").write_text("x")
    driver = EcrPinpadDriver(spec("/nonexistent", usb_id=(0x0B00, 0x0080), usb_sysfs=sysfs))
    with pytest.raises(DeviceGone, match="no USB device"):
        await driver.poll()


async def test_usb_presence_against_this_machines_sys() -> None:
    root = Path("/sys/bus/usb/devices")
    present = set()
    if root.is_dir():
        for entry in root.iterdir():
            try:
                vendor = (entry / "idVendor").read_text().strip()
                product = (entry / "idProduct").read_text().strip()
            except OSError:
                continue
            present.add((int(vendor, 16), int(product, 16)))
    absent = next((0xFFFF, p) for p in range(0xFFFF, 0, -1) if (0xFFFF, p) not in present)
    driver = EcrPinpadDriver(spec("/dev/nonexistent-pinpad", usb_id=absent))
    assert driver.options.usb_sysfs == root
    with pytest.raises(DeviceGone, match="PIN pad not found"):
        await driver.poll()


async def test_node_presence_needs_a_device_node(tmp_path: Path) -> None:
    plain = tmp_path / "not-a-tty"
    plain.write_text("")
    with pytest.raises(DeviceGone, match="is not a device node"):
        await EcrPinpadDriver(spec(str(plain))).poll()
    dangling = tmp_path / "by-id-link"
    dangling.symlink_to(tmp_path / "gone")
    with pytest.raises(DeviceGone, match="no such device"):
        await EcrPinpadDriver(spec(str(dangling))).poll()
    reading = await EcrPinpadDriver(spec("/dev/null")).poll()  # a character device
    assert reading.attributes == {"mode": "presence", "device_node": "/dev/null"}


# -- against the simulator ----------------------------------------------------


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[PinpadSimulator]:
    s = PinpadSimulator(tmp_path / "ttyPINPAD")
    s._loop = asyncio.get_running_loop()
    s.plug()
    yield s
    s.unplug()


async def test_presence_never_opens_the_port(sim: PinpadSimulator) -> None:
    driver = EcrPinpadDriver(spec(str(sim.link)))
    pos_app = SerialLink(str(sim.link))  # the POS application owns the port
    pos_app.open()
    reading = await driver.poll()
    assert reading.state == "ok"
    assert reading.attributes["device_node"] == os.path.realpath(sim.slave_path or "")
    sim.command("unplug")
    with pytest.raises(DeviceGone, match="no such device"):
        await driver.poll()
    pos_app.close()
    sim.command("replug")
    pos_app.open()  # exclusive again: had presence opened it, it would find it busy
    reading = await driver.poll()
    assert reading.state == "ok"
    assert reading.attributes["device_node"] == os.path.realpath(sim.slave_path or "")
    await driver.poll()
    pos_app.close()
    await driver.close()
    assert sim.log == []  # not one byte was sent


async def test_enq_ok(sim: PinpadSimulator) -> None:
    driver = EcrPinpadDriver(spec(str(sim.link), mode="link"))
    reading = await driver.poll()
    assert reading.state == "ok" and reading.flags == ()
    assert reading.attributes == {"mode": "link", "liveness": "enq", "retransmissions": 0}
    await driver.poll()
    await driver.close()
    await eventually(lambda: sim.log == ["ENQ", "EOT", "ENQ", "EOT"])


async def test_poll_ok_without_and_with_the_answer(sim: PinpadSimulator) -> None:
    driver = EcrPinpadDriver(spec(str(sim.link), mode="link", liveness="poll"))
    reading = await driver.poll()
    assert reading.state == "ok"
    assert reading.attributes == {"mode": "link", "liveness": "poll", "retransmissions": 0}
    await driver.close()
    sim.log.clear()
    driver = EcrPinpadDriver(spec(str(sim.link), mode="link", liveness="poll", poll_response=True))
    reading = await driver.poll()
    assert reading.state == "ok" and reading.attributes["response"] == "0110|00"
    await driver.close()
    await eventually(lambda: sim.log == ["frame 0100", "ACK"])


async def test_busy_is_silent_after_every_retry(sim: PinpadSimulator) -> None:
    sim.command("busy")
    for liveness in ("enq", "poll"):
        sim.log.clear()
        driver = EcrPinpadDriver(
            spec(str(sim.link), timeout_s=0.2, mode="link", liveness=liveness, retries=2)
        )
        with pytest.raises(DeviceSilent, match=r"not answering \(busy or not configured\)"):
            await driver.poll()
        await driver.close()
        assert len(sim.log) == 3  # sent once, then retried twice
    sim.command("ok")
    sim.command("silence")
    driver = EcrPinpadDriver(spec(str(sim.link), timeout_s=0.2, mode="link", retries=0))
    with pytest.raises(DeviceSilent, match="not answering"):
        await driver.poll()
    sim.command("ok")
    assert (await driver.poll()).state == "ok"
    await driver.close()


async def test_nak_to_everything_is_a_fault(sim: PinpadSimulator) -> None:
    sim.command("nak")
    driver = EcrPinpadDriver(spec(str(sim.link), mode="link"))
    reading = await driver.poll()
    assert (reading.state, reading.flags, reading.reason) == ("fault", ("rejected",), REJECTED_ENQ)
    assert reading.attributes["retransmissions"] == 3
    assert sim.log == ["ENQ"] * 4
    await driver.close()
    sim.log.clear()
    driver = EcrPinpadDriver(spec(str(sim.link), mode="link", liveness="poll"))
    reading = await driver.poll()
    assert (reading.state, reading.flags) == ("fault", ("rejected",))
    assert reading.reason == REJECTED_FRAMES == "PIN pad rejects our frames (check LRC settings)"
    assert sim.log == ["frame 0100"] * 4
    await driver.close()


async def test_lrc_rules_that_differ_are_rejected_and_matching_ones_work(
    sim: PinpadSimulator,
) -> None:
    sim.command("lrc 0x7f")  # a Nexi-style terminal
    driver = EcrPinpadDriver(spec(str(sim.link), mode="link", liveness="poll", retries=1))
    reading = await driver.poll()
    assert reading.state == "fault" and reading.reason == REJECTED_FRAMES
    assert sim.log == ["bad frame 0100"] * 2
    await driver.close()
    driver = EcrPinpadDriver(
        spec(str(sim.link), mode="link", liveness="poll", poll_response=True, rules=NEXI)
    )
    reading = await driver.poll()
    assert reading.state == "ok" and reading.attributes["response"] == "0110|00"
    await driver.close()


async def test_bad_lrc_answers_are_naked_then_a_fault(sim: PinpadSimulator) -> None:
    sim.command("bad_lrc")
    driver = EcrPinpadDriver(spec(str(sim.link), mode="link", liveness="poll", poll_response=True))
    reading = await driver.poll()
    assert (reading.state, reading.flags, reading.reason) == ("fault", ("bad_lrc",), BAD_LRC)
    assert reading.attributes["retransmissions"] == 3
    # it sent its answer once and again after each of our first 3 NAKs
    await eventually(lambda: sim.log == ["frame 0100", "NAK", "NAK", "NAK", "NAK"])
    sim.command("ok")
    sim.log.clear()
    reading = await driver.poll()
    assert reading.state == "ok" and reading.attributes["response"] == "0110|00"
    await driver.close()


class DropsFirst(PinpadSimulator):
    """Ignores the first unit it is sent, like a terminal waking up."""

    dropped = False

    def respond(self, data: bytes) -> bytes:
        if not self.dropped:
            self.dropped = True
            return b""
        return super().respond(data)


class Stray(PinpadSimulator):
    def respond(self, data: bytes) -> bytes:
        return b"?"


async def test_a_retransmission_that_works_is_ok_with_link_errors(tmp_path: Path) -> None:
    s = DropsFirst(tmp_path / "ttyDROP")
    s._loop = asyncio.get_running_loop()
    s.plug()
    try:
        driver = EcrPinpadDriver(spec(str(s.link), timeout_s=0.2, mode="link"))
        reading = await driver.poll()
        assert (reading.state, reading.flags) == ("ok", ("link_errors",))
        assert reading.attributes["retransmissions"] == 1
        await driver.close()
    finally:
        s.unplug()


async def test_stray_answer_is_a_protocol_error(tmp_path: Path) -> None:
    s = Stray(tmp_path / "ttySTRAY")
    s._loop = asyncio.get_running_loop()
    s.plug()
    try:
        driver = EcrPinpadDriver(spec(str(s.link), mode="link"))
        with pytest.raises(EcrLinkError, match="stray byte b'\\?'"):
            await driver.poll()
        await driver.close()
    finally:
        s.unplug()


async def test_garbage_is_a_protocol_error(sim: PinpadSimulator) -> None:
    sim.command("garbage")
    driver = EcrPinpadDriver(spec(str(sim.link), timeout_s=0.2, mode="link", retries=0))
    errors = []
    for _ in range(3):  # a random byte is ACK one time in 256: try a few
        try:
            await driver.poll()
        except EcrLinkError as err:
            errors.append(err)
        except DeviceError:
            pass
    assert errors
    await driver.close()


async def test_link_mode_on_a_port_the_pos_app_holds(sim: PinpadSimulator) -> None:
    pos_app = SerialLink(str(sim.link))
    pos_app.open()
    driver = EcrPinpadDriver(spec(str(sim.link), mode="link"))
    with pytest.raises(DevicePortBusy, match='use mode = "presence"'):
        await driver.poll()
    pos_app.close()
    assert (await driver.poll()).state == "ok"
    await driver.close()
    pos_app.open()  # close() let it go
    pos_app.close()
