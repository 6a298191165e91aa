"""python-escpos, an independent ESC/POS implementation, reads the printer simulator
and agrees with our driver on the online and paper states, for every fault.

python-escpos 3.1's quirks (serial_protocols.md §1): ``Serial`` reads up to 16
bytes, so every query waits its full timeout (made small here); its
``paper_status()`` says 2 (paper OK) when nothing answers, so a silent printer
would look healthy to it; ``is_online()`` tests bit 3 of ``DLE EOT 1``;
``Serial`` defaults to ``dsrdtr=True`` (DSR/DTR flow control), turned off
here as a pty has no modem lines. It is blocking, so it runs in a worker
thread while the event loop serves the in-process simulator.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.devices.base import DeviceSpec, Reading
from agent.devices.escpos_printer import EscposPrinterDriver
from agent.sim.printer import PrinterSimulator

escpos_printer = pytest.importorskip("escpos.printer", reason="python-escpos is not installed")

FAULTS = ("ok", *PrinterSimulator.COMMANDS)


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[PrinterSimulator]:
    s = PrinterSimulator(tmp_path / "ttyPRINTER")
    s._loop = asyncio.get_running_loop()
    s.plug()
    yield s
    s.unplug()


def escpos_reads(port: str) -> tuple[bool, int]:
    """``(is_online(), paper_status())`` as python-escpos sees the printer at ``port``."""
    printer = escpos_printer.Serial(devfile=port, baudrate=9600, timeout=0.2, dsrdtr=False)
    printer.open()
    try:
        return printer.is_online(), printer.paper_status()
    finally:
        printer.close()


def ours(reading: Reading) -> tuple[bool, int]:
    """Our reading in python-escpos's terms (paper: 2 OK, 1 near end, 0 none)."""
    paper = 0 if "paper_end" in reading.flags else 1 if "paper_near_end" in reading.flags else 2
    return "offline" not in reading.flags, paper


# What python-escpos must read for each fault: (is_online(), paper_status()).
THEIRS = {
    "ok": (True, 2),
    "paper_near_end": (True, 1),
    "paper_end": (False, 0),
    "cover_open": (False, 2),
    "offline": (False, 2),
    "cutter_error": (False, 2),
    "recoverable_error": (False, 2),
    "unrecoverable_error": (False, 2),
    "auto_recoverable_error": (False, 2),
}


def test_every_fault_is_covered() -> None:
    assert set(THEIRS) == set(FAULTS)


@pytest.mark.parametrize("fault", FAULTS)
async def test_python_escpos_agrees_with_our_driver(sim: PrinterSimulator, fault: str) -> None:
    sim.command(fault)
    spec = DeviceSpec(name="receipt", kind="escpos_printer", port=str(sim.link), timeout_s=2.0)
    driver = EscposPrinterDriver(spec)
    try:
        reading = await driver.poll()
    finally:
        await driver.close()  # one reader on the port at a time
    before = sim.answered
    theirs = await asyncio.to_thread(escpos_reads, str(sim.link))
    assert sim.answered == before + 2  # it really asked (3.1 says "paper OK" on silence)
    assert theirs == ours(reading) == THEIRS[fault]


def test_python_escpos_reads_the_simulate_command(tmp_path: Path) -> None:
    """The same through a separate ``python -m agent simulate printer`` process."""
    link = tmp_path / "ttyPRINTER"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "simulate", "printer", "--link", str(link)],
        cwd=Path(__file__).resolve().parents[3],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline().startswith(f"printer simulator: {link} -> ")
        proc.stdout.readline()  # the command list
        assert escpos_reads(str(link)) == THEIRS["ok"]
        for fault in ("paper_near_end", "paper_end", "cover_open"):
            proc.stdin.write(f"ok\n{fault}\n")
            proc.stdin.flush()
            assert proc.stdout.readline().startswith("ok ")
            assert proc.stdout.readline().strip() == f"ok {fault}"
            assert escpos_reads(str(link)) == THEIRS[fault], fault
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
