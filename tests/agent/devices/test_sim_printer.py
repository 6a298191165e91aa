"""The printer simulator: its status bytes follow the ESC/POS bit tables, and it reads
the byte stream like a printer's real-time command parser."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.devices.escpos_printer import FLAGS, check_reply, parse_status
from agent.sim.printer import FAULT_BITS, PrinterSimulator
from agent.sim.pty import UnknownCommand

ESC_INIT = b"\x1b@"
CUT = b"\x1dV\x00"


def _sim(tmp_path: Path | None = None) -> PrinterSimulator:
    return PrinterSimulator((tmp_path or Path("/nonexistent")) / "ttyP")


def _replies(sim: PrinterSimulator) -> bytes:
    return bytes(sim.status(n) for n in (1, 2, 3, 4))


def test_a_healthy_printer_answers_0x12_to_every_query() -> None:
    sim = _sim()
    assert sim.respond(b"\x10\x04\x01\x10\x04\x02\x10\x04\x03\x10\x04\x04") == b"\x12" * 4


# fault → the four replies, per the bit tables (serial_protocols.md §1)
DOCUMENTED = {
    "paper_near_end": b"\x12\x12\x12\x1e",
    "paper_end": b"\x1a\x32\x12\x7e",
    "cover_open": b"\x1a\x16\x12\x12",
    "offline": b"\x1a\x12\x12\x12",
    "cutter_error": b"\x1a\x52\x1a\x12",
    "recoverable_error": b"\x1a\x52\x16\x12",
    "unrecoverable_error": b"\x1a\x52\x32\x12",
    "auto_recoverable_error": b"\x1a\x52\x52\x12",
}


def test_every_fault_is_documented_here() -> None:
    assert set(DOCUMENTED) == set(PrinterSimulator.COMMANDS) == set(FAULT_BITS)


@pytest.mark.parametrize("fault", DOCUMENTED)
def test_each_fault_sets_the_documented_bits(fault: str) -> None:
    sim = _sim()
    assert sim.command(fault) == fault
    assert _replies(sim) == DOCUMENTED[fault]
    assert sim.respond(b"\x10\x04\x01\x10\x04\x04") == DOCUMENTED[fault][0::3]


@given(st.sets(st.sampled_from(sorted(FAULT_BITS))))
def test_any_combination_gives_valid_bytes_and_round_trips(faults: set[str]) -> None:
    sim = _sim()
    for fault in faults:
        sim.command(fault)
    replies = _replies(sim)
    for n, byte in zip((1, 2, 3, 4), replies, strict=True):
        assert check_reply(n, byte) == byte  # 0xx1xx10
    reading = parse_status(replies)
    expected = {f for f in faults if f in FLAGS}
    if faults - {"paper_near_end"}:
        expected.add("offline")  # every fault but near-end takes the printer offline
    if "paper_end" in faults:
        expected.add("paper_near_end")  # the near-end sensor sees no paper either
    assert set(reading.flags) == expected
    assert (reading.state == "ok") == (not faults)
    assert (reading.state == "fault") == bool(faults - {"paper_near_end"})


def test_print_data_is_ignored_and_embedded_queries_are_answered() -> None:
    sim = _sim()
    sim.command("paper_near_end")
    job = ESC_INIT + b"Total  12.50\n" + b"\x10\x04\x04" + b"Thank you\n" + CUT
    assert sim.respond(job) == b"\x1e"
    # A bit image whose data happens to hold DLE EOT 1: a printer answers it too.
    image = b"\x1dv0\x00\x02\x00\x02\x00" + b"\xff\x10\x04\x01"
    assert sim.respond(image) == b"\x12"
    assert sim.respond(b"plain text, DLE alone \x10 and EOT alone \x04 ...") == b""
    assert sim.answered == 2


def test_a_query_split_across_writes_is_answered_once_complete() -> None:
    sim = _sim()
    assert sim.respond(b"abc\x10") == b""
    assert sim.respond(b"\x04") == b""
    assert sim.respond(b"\x03def") == b"\x12"
    for byte in b"\x10\x04\x02":
        got = sim.respond(bytes([byte]))
    assert got == b"\x12"
    assert sim._inbox == b""


def test_unsupported_n_gets_no_reply_and_does_not_swallow_a_query() -> None:
    sim = _sim()
    assert sim.respond(b"\x10\x04\x07\x01") == b""  # ink status: not this model
    assert sim.respond(b"\x10\x04\x00\x10\x04\x05") == b""
    assert sim.respond(b"\x10\x04\x10\x04\x01") == b"\x12"  # n is itself a DLE
    assert sim.respond(b"\x10\x10\x04\x02") == b"\x12"
    assert sim.answered == 2


def test_the_inbox_keeps_only_an_unfinished_query() -> None:
    sim = _sim()
    sim.respond(b"x" * 10_000 + b"\x10\x04")
    assert sim._inbox == b"\x10\x04"


def test_commands_off_ok_and_errors() -> None:
    sim = _sim()
    sim.command("cover_open")
    sim.command("paper_near_end")
    assert sim.command("cover_open off") == "cover_open cleared"
    assert sim.faults == {"paper_near_end"}
    assert sim.command("ok") == "all faults cleared"
    assert sim.faults == set() and _replies(sim) == b"\x12" * 4
    with pytest.raises(UnknownCommand):
        sim.command("jam")
    with pytest.raises(ValueError, match="takes no argument"):
        sim.command("paper_end now")
    assert "paper_end" in sim.help() and "replug" in sim.help()


def test_an_older_model_without_a_query() -> None:
    class Old(PrinterSimulator):
        QUERIES = (1, 2, 3)

    sim = Old(Path("/nonexistent/t"))
    assert sim.respond(b"\x10\x04\x04\x10\x04\x01") == b"\x12"
