"""The Megatec UPS simulator: exact answers, echo of unknown commands, actions, faults."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.sim import create
from agent.sim.pty import UnknownCommand
from agent.sim.ups import UpsSimulator

NORMAL_Q1 = b"(230.0 230.0 230.0 025 50.0 13.6 25.0 00001001\r"


@pytest.fixture
def sim(tmp_path: Path) -> UpsSimulator:
    return UpsSimulator(tmp_path / "ttyUPS")  # respond() needs no pty


def test_the_registry_creates_it(tmp_path: Path) -> None:
    assert isinstance(create("ups", tmp_path / "t"), UpsSimulator)


def test_q1_f_i_answers_are_exact(sim: UpsSimulator) -> None:
    assert sim.respond(b"Q1\r") == NORMAL_Q1
    assert len(NORMAL_Q1) == 47
    assert sim.respond(b"F\r") == b"#230.0 004 12.00 50.0\r"
    identity = sim.respond(b"I\r")
    assert identity == b"#POSMON          SIM-650VA  1.0.0     \r"
    assert len(identity) == 39 and identity[16:17] == b" " and identity[27:28] == b" "


def test_partial_and_several_requests(sim: UpsSimulator) -> None:
    assert sim.respond(b"Q") == b""
    assert sim.respond(b"1") == b""
    assert sim.respond(b"\rF\rI") == NORMAL_Q1 + b"#230.0 004 12.00 50.0\r"
    assert sim.respond(b"\r").startswith(b"#POSMON")
    assert list(sim.requests) == [b"Q1", b"F", b"I"]


def test_unknown_commands_are_echoed_and_empty_lines_ignored(sim: UpsSimulator) -> None:
    assert sim.respond(b"QS\r") == b"QS\r"
    assert sim.respond(b"M\r") == b"M\r"
    assert sim.respond(b"\r") == b""


@pytest.mark.parametrize(
    ("request_", "bits"),
    [
        (b"Q", "00001000"),  # beeper toggled off
        (b"T", "00001101"),
        (b"TL", "00001101"),
        (b"T04", "00001101"),
        (b"S03", "00001011"),
        (b"S.5R0000", "00001011"),
        (b"S02R0005", "00001011"),
    ],
)
def test_actions_answer_nothing_and_set_bits(sim: UpsSimulator, request_: bytes, bits: str) -> None:
    assert sim.respond(request_ + b"\r") == b""
    assert sim.respond(b"Q1\r")[38:46] == bits.encode()


def test_cancel_actions(sim: UpsSimulator) -> None:
    sim.respond(b"T\rS03\r")
    assert sim.respond(b"Q1\r")[38:46] == b"00001111"
    assert sim.respond(b"CT\rQ1\r")[38:46] == b"00001011"
    assert sim.respond(b"C\rQ1\r")[38:46] == b"00001001"
    assert sim.respond(b"Q\rQ\rQ1\r")[38:46] == b"00001001"  # toggled twice


def test_malformed_actions_are_echoed(sim: UpsSimulator) -> None:
    for line in (b"T1", b"TX4", b"S3", b"S03R12", b"SXX"):
        assert sim.respond(line + b"\r") == line + b"\r"


@pytest.mark.parametrize(
    ("commands", "q1"),
    [
        (["on_battery"], b"(000.0 000.0 230.0 025 50.0 13.6 25.0 10001001\r"),
        (["battery_low"], b"(230.0 230.0 230.0 025 50.0 10.6 25.0 01001001\r"),
        (["bypass"], b"(195.0 195.0 224.0 025 50.0 13.6 25.0 00101001\r"),
        (["bypass trim"], b"(255.0 255.0 232.0 025 50.0 13.6 25.0 00101001\r"),
        (["bypass bypass"], b"(230.0 230.0 230.0 025 50.0 13.6 25.0 00101001\r"),
        (["ups_failed"], b"(230.0 230.0 230.0 025 50.0 13.6 25.0 00011001\r"),
        (["test"], b"(230.0 230.0 230.0 025 50.0 13.6 25.0 00001101\r"),
        (["shutdown"], b"(230.0 230.0 230.0 025 50.0 13.6 25.0 00001011\r"),
        (["load 87"], b"(230.0 230.0 230.0 087 50.0 13.6 25.0 00001001\r"),
        (["voltage 198.04"], b"(198.0 198.0 230.0 025 50.0 13.6 25.0 00001001\r"),
        (["type online"], b"(230.0 230.0 230.0 025 50.0 2.27 25.0 00000001\r"),
        (["type online", "battery_low"], b"(230.0 230.0 230.0 025 50.0 1.77 25.0 01000001\r"),
        (["beeper off"], b"(230.0 230.0 230.0 025 50.0 13.6 25.0 00001000\r"),
        (["on_battery", "voltage 12"], b"(012.0 012.0 230.0 025 50.0 13.6 25.0 10001001\r"),
    ],
)
def test_faults_change_the_q1_answer(sim: UpsSimulator, commands: list[str], q1: bytes) -> None:
    for line in commands:
        assert sim.command(line)
    assert sim.respond(b"Q1\r") == q1
    assert sim.command("ok") == "all faults cleared"
    assert sim.respond(b"Q1\r") == NORMAL_Q1


@pytest.mark.parametrize(
    "line",
    [
        "bypass sideways",
        "bypass boost trim",
        "load",
        "load x",
        "load 1000",
        "load -1",
        "load 2.5",
        "voltage 1000",
        "voltage nan",
        "voltage 1 2",
        "type offline",
        "beeper loud",
    ],
)
def test_bad_fault_arguments_are_value_errors(sim: UpsSimulator, line: str) -> None:
    with pytest.raises(ValueError) as raised:
        sim.command(line)
    assert not isinstance(raised.value, UnknownCommand)


def test_unknown_fault_and_help(sim: UpsSimulator) -> None:
    with pytest.raises(UnknownCommand):
        sim.command("explode")
    text = sim.help()
    for word in ("on_battery", "battery_low", "bypass", "ups_failed", "test", "shutdown"):
        assert word in text
    assert "load N" in text and "voltage N" in text and "unplug" in text


def test_garbage_and_silence_are_handled_by_the_base(sim: UpsSimulator) -> None:
    sim.command("garbage")
    assert sim.garbage
    sim.command("silence")
    assert sim.silent and not sim.garbage
    sim.command("ok")
    assert not sim.silent and not sim.garbage
