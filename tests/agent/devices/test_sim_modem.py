"""The modem simulator: its bytes on the wire, its fault commands, its unsolicited codes,
and two independent AT peers reading it (socat as a raw terminal, python-gsmmodem)."""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.devices.serial_link import SerialLink
from agent.sim.modem import ModemSimulator
from agent.sim.pty import UnknownCommand

ROOT = Path(__file__).resolve().parents[3]


def fresh() -> ModemSimulator:
    return ModemSimulator(Path("/nonexistent/ttyMODEM"))


# -- bytes on the wire -----------------------------------------------------------


def test_echo_until_ate0_and_v1_framing() -> None:
    sim = fresh()
    assert sim.respond(b"AT\r") == b"AT\r\r\nOK\r\n"
    assert sim.respond(b"AT+CSQ\r") == b"AT+CSQ\r\r\n+CSQ: 20,99\r\n\r\nOK\r\n"
    assert sim.respond(b"ATE0\r") == b"ATE0\r\r\nOK\r\n"  # echoed, then off
    assert sim.respond(b"AT+CSQ\r") == b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n"
    assert sim.respond(b"ATE1V1\r") == b"\r\nOK\r\n"
    assert sim.respond(b"at\r") == b"at\r\r\nOK\r\n"


def test_partial_and_several_commands_and_crlf_from_the_host() -> None:
    sim = fresh()
    sim.respond(b"ATE0\r")
    assert sim.respond(b"AT+C") == b""
    assert sim.respond(b"SQ\r\nAT\r\n") == b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n\r\nOK\r\n"
    assert sim.respond(b"hello\r") == b""  # not a command: no answer
    assert sim.respond(b"AT+FOO\r") == b"\r\nERROR\r\n"
    assert sim.respond(b"x" * 2000) == b"" and sim.respond(b"AT\r") == b"\r\nOK\r\n"


def test_cme_errors_follow_cmee() -> None:
    sim = fresh()
    sim.command("no_sim")
    sim.respond(b"ATE0\r")
    assert sim.respond(b"AT+CPIN?\r") == b"\r\nERROR\r\n"
    assert sim.respond(b"AT+CMEE=1\rAT+CMEE?\r") == b"\r\nOK\r\n\r\n+CMEE: 1\r\n\r\nOK\r\n"
    assert sim.respond(b"AT+CPIN?\r") == b"\r\n+CME ERROR: 10\r\n"
    assert sim.respond(b"AT+CMEE=2\r") == b"\r\nOK\r\n"
    assert sim.respond(b"AT+CPIN?\r") == b"\r\n+CME ERROR: SIM not inserted\r\n"
    assert sim.respond(b"AT+CREG=7\r") == b"\r\n+CME ERROR: operation not supported\r\n"
    assert sim.respond(b"ATV0\r") == b"\r\nERROR\r\n"  # numeric codes are not simulated


def test_registration_replies_by_mode_vendor_and_technology() -> None:
    sim = fresh()
    sim.respond(b"ATE0\r")
    assert sim.respond(b"AT+CREG?\r") == b"\r\n+CREG: 0,1\r\n\r\nOK\r\n"
    sim.respond(b"AT+CREG=2\rAT+CEREG=2\r")
    assert sim.respond(b"AT+CREG?\r") == b'\r\n+CREG: 2,1,"00C3","0010AB01",7\r\n\r\nOK\r\n'
    sim.command("vendor huawei")
    assert sim.respond(b"AT+CREG?\r") == b"\r\n+CREG: 2,1,00C3,AB01\r\n\r\nOK\r\n"
    sim.command("vendor novatel")
    assert sim.respond(b"AT+CEREG?\r") == b"\r\n+CEREG: 2,1, 00C3, 0010AB01 ,7\r\n\r\nOK\r\n"
    sim.command("tech umts")
    assert sim.respond(b"AT+CEREG?\r") == b"\r\n+CEREG: 2,0\r\n\r\nOK\r\n"
    sim.command("sim_pin")
    assert sim.respond(b"AT+CREG?\r") == b"\r\n+CREG: 2,0\r\n\r\nOK\r\n"
    assert sim.respond(b"AT+CPIN?\r") == b"\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n"
    assert sim.respond(b"AT+COPS?\r") == b"\r\n+COPS: 0\r\n\r\nOK\r\n"
    sim.command("ok")
    assert sim.respond(b"AT+COPS?\r") == b'\r\n+COPS: 0,0,"posmon Mobile",7\r\n\r\nOK\r\n'


def test_identity() -> None:
    sim = fresh()
    sim.respond(b"ATE0\r")
    assert sim.respond(b"AT+CGMI\r") == b"\r\nPOSMON\r\n\r\nOK\r\n"
    assert sim.respond(b"AT+GMM\r") == b"\r\nSIM-4G\r\n\r\nOK\r\n"
    sim.command("vendor sierra")
    assert sim.respond(b"ATI\r").startswith(b"\r\nSierra Wireless, Inc.\r\n\r\nC885\r\n\r\nJ1_0")


def test_chatty_puts_unsolicited_codes_around_and_inside_answers() -> None:
    sim = fresh()
    sim.command("chatty")
    assert sim.respond(b"AT+CSQ\r") == (
        b"\r\n+CEREG: 3\r\nAT+CSQ\r\r\n^RSSI: 17\r\n\r\n+CSQ: 20,99\r\n"
        b'\r\n+CREG: 5,"00C3","0010AB01",7\r\n\r\nRING\r\n\r\nOK\r\n'
    )


def test_atz_and_replug_bring_back_the_power_on_defaults(tmp_path: Path) -> None:
    sim = ModemSimulator(tmp_path / "ttyMODEM")
    sim.respond(b"ATE0\rAT+CMEE=2\rAT+CREG=2\r")
    assert (sim.echo, sim.cmee, sim.creg_n) == (False, 2, 2)
    sim.respond(b"ATZ\r")
    assert (sim.echo, sim.cmee, sim.creg_n) == (True, 0, 0)
    sim.plug()
    try:
        sim.respond(b"ATE0\r")
        sim.command("vendor huawei")
        sim.command("unplug")
        sim.command("replug")
        assert sim.echo and sim.vendor.manufacturer == "huawei"
    finally:
        sim.unplug()


# -- fault commands ------------------------------------------------------------


@pytest.mark.parametrize(
    "command, rssi",
    [
        ("signal -95", 9),
        ("signal -100", 7),
        ("signal -51", 31),
        ("signal 0", 31),
        ("signal -113", 0),
        ("signal -200", 0),
        ("rssi 99", 99),
        ("rssi 150", 150),
    ],
)
def test_signal_commands(command: str, rssi: int) -> None:
    sim = fresh()
    sim.command(command)
    assert sim.rssi == rssi


@pytest.mark.parametrize(
    "command",
    [
        "signal",
        "signal x",
        "signal -95 -96",
        "rssi 32",
        "rssi 200",
        "tech 6g",
        "tech",
        "vendor nokia",
        "operator",
        'operator "quoted"',
        "urc",
    ],
)
def test_bad_fault_arguments(command: str) -> None:
    with pytest.raises(ValueError):
        fresh().command(command)


def test_unknown_command_and_help() -> None:
    sim = fresh()
    with pytest.raises(UnknownCommand):
        sim.command("explode")
    for word in ("signal DBM", "no_sim", "vendor", "chatty", "unplug", "ok"):
        assert word in sim.help()


def test_ok_clears_faults_but_keeps_the_vendor() -> None:
    sim = fresh()
    for cmd in ("denied", "no_sim", "signal -110", "operator X", "tech gsm", "chatty"):
        sim.command(cmd)
    sim.command("vendor huawei")
    sim.command("ok")
    assert (sim.stat, sim.sim, sim.rssi, sim.operator, sim.act, sim.chatty) == (
        1,
        "READY",
        20,
        "posmon Mobile",
        7,
        False,
    )
    assert sim.vendor.manufacturer == "huawei"


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_any_input_is_answered_without_an_exception(data: bytes) -> None:
    fresh().respond(data)


# -- unsolicited codes on the wire ----------------------------------------------------


@pytest.fixture
async def plugged(tmp_path: Path) -> AsyncIterator[ModemSimulator]:
    s = ModemSimulator(tmp_path / "ttyMODEM")
    s._loop = asyncio.get_running_loop()
    s.plug()
    yield s
    s.unplug()


async def test_registration_changes_send_unsolicited_codes(plugged: ModemSimulator) -> None:
    link = SerialLink(str(plugged.link))
    link.open()
    try:
        plugged.command("denied")  # +CREG mode 0: sent all the same
        assert await link.read_until(b"+CEREG: 3\r\n", 5) == b"\r\n+CREG: 3\r\n\r\n+CEREG: 3\r\n"
        plugged.command("denied")  # no change: nothing sent
        plugged.command("operator Other")
        await link.write(b"ATE0\rAT+CREG=2\rAT+CEREG=1\r")
        assert await link.read_until(b"OK\r\n\r\nOK\r\n\r\nOK\r\n", 5) == (
            b"ATE0\r\r\nOK\r\n\r\nOK\r\n\r\nOK\r\n"
        )
        plugged.command("ok")
        assert await link.read_until(b"+CEREG: 1\r\n", 5) == (
            b'\r\n+CREG: 1,"00C3","0010AB01",7\r\n\r\n+CEREG: 1\r\n'
        )
        plugged.command("tech gsm")  # off LTE: only +CEREG changes
        assert await link.read_until(b"\r\n+CEREG: 0\r\n", 5) == b"\r\n+CEREG: 0\r\n"
        plugged.command("urc RING")
        assert await link.read_until(b"RING\r\n", 5) == b"\r\nRING\r\n"
    finally:
        link.close()


# -- independent peers ------------------------------------------------------------


async def test_socat_as_a_raw_terminal_sees_the_exact_bytes(plugged: ModemSimulator) -> None:
    """socat opens the pty with its own termios (raw, no echo) and moves bytes both ways."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("socat is not installed (apt-get install socat)")
    proc = await asyncio.create_subprocess_exec(
        socat,
        "STDIO",
        f"{plugged.link},raw,echo=0",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"AT+CSQ\r")
        await proc.stdin.drain()
        async with asyncio.timeout(20):
            got = await proc.stdout.readuntil(b"OK\r\n")
        assert got == b"AT+CSQ\r\r\n+CSQ: 20,99\r\n\r\nOK\r\n"
        proc.stdin.write(b"ATE0\rAT+CPIN?\r")
        await proc.stdin.drain()
        async with asyncio.timeout(20):
            got = await proc.stdout.readuntil(b"READY\r\n\r\nOK\r\n")
        assert got == b"ATE0\r\r\nOK\r\n\r\n+CPIN: READY\r\n\r\nOK\r\n"
    finally:
        proc.kill()
        await proc.wait()


class SimProcess:
    """``python -m agent simulate modem`` with its control lines read by a thread."""

    def __init__(self, link: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "simulate", "modem", "--link", str(link)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        self._pump_thread = threading.Thread(target=self._pump, args=(self.proc.stdout,))
        self._pump_thread.start()

    def started(self) -> None:
        assert self.line().startswith("modem simulator:")
        self.line()  # the help line

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)

    def line(self) -> str:
        return self.lines.get(timeout=20)

    def command(self, text: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.line()

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._pump_thread.join(timeout=20)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[tuple[SimProcess, Path]]:
    link = tmp_path / "ttyMODEM"
    sim = SimProcess(link)
    try:
        sim.started()
        yield sim, link
    finally:
        sim.stop()


def test_python_gsmmodem_reads_the_simulator(sim_process: tuple[SimProcess, Path]) -> None:
    """python-gsmmodem-new (PyPI), an AT modem library of its own, as the peer."""
    with warnings.catch_warnings():  # its regexes have invalid escapes ("\+")
        warnings.simplefilter("ignore")
        try:
            from gsmmodem.exceptions import CmeError, InvalidStateException
            from gsmmodem.modem import GsmModem
            from gsmmodem.serial_comms import SerialComms
        except ImportError:
            pytest.skip("python-gsmmodem-new is not installed (pip install python-gsmmodem-new)")
    sim, link = sim_process
    modem: Any = GsmModem(str(link), 115200)
    seen: list[list[str]] = []
    modem.notifyCallback = lambda lines: seen.append(list(lines))
    # Its connect() also sets up SMS; the port and the reader thread are enough here.
    SerialComms.connect(modem)
    try:
        modem.write("ATE0")
        modem.write("AT+CMEE=1")
        assert (modem.manufacturer, modem.model, modem.revision) == ("POSMON", "SIM-4G", "1.0.0")
        assert modem.signalStrength == 20
        assert modem.networkName == "posmon Mobile"
        assert modem.waitForNetworkCoverage(timeout=10) == 20

        assert sim.command("no_sim") == "ok SIM absent\n"
        wait_for(lambda: "+CREG: 0" in flat(seen))  # sent unasked when the SIM went
        with pytest.raises(CmeError) as err:
            modem.write("AT+CPIN?")
        assert err.value.code == 10
        assert sim.command("ok") == "ok all faults cleared\n"
        assert sim.command("denied") == "ok registration denied (stat 3)\n"
        wait_for(lambda: "+CREG: 3" in flat(seen))
        with pytest.raises(InvalidStateException, match="denied"):
            modem.waitForNetworkCoverage(timeout=10)
        assert sim.command("signal -95") == "ok signal -95 dBm (rssi 9)\n"
        assert modem.signalStrength == 9
    finally:
        SerialComms.close(modem)


def flat(seen: list[list[str]]) -> list[str]:
    return [line for lines in list(seen) for line in lines]


def wait_for(condition: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the peer never saw it"
        time.sleep(0.01)
