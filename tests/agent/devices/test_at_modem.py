"""at_modem: the AT framer and parsers on real modems' replies, the status rules, and
the driver against the modem simulator (in-process and as ``posmon-agent simulate``)."""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.configkit import ConfigError, Section
from agent.devices.at_modem import (
    FAULT_FLAGS,
    FLAGS,
    KIND,
    ModemDriver,
    ModemOptions,
    parse_options,
    parse_transcript,
    poll_commands,
    read_status,
)
from agent.devices.at_parse import (
    MAX_LINE,
    MAX_RESPONSE,
    AtError,
    ResponseFramer,
    find_response,
    is_final,
    parse_cops,
    parse_cpin,
    parse_csq,
    parse_registration,
    parse_response,
    parse_text,
)
from agent.devices.base import (
    DeviceGone,
    DevicePortBusy,
    DeviceProtocolError,
    DeviceSilent,
    DeviceSpec,
    Reading,
)
from agent.devices.serial_link import SerialLink
from agent.sim.modem import ModemSimulator
from tests.agent.devices.simproc import simulate

ROOT = Path(__file__).resolve().parents[3]
FIXTURES: dict[str, list[dict[str, Any]]] = tomllib.loads(
    (Path(__file__).parent / "fixtures" / "modem" / "replies.toml").read_text()
)


def answer(published: str, *, before: str = "", after: str = "") -> bytes:
    """A published reply as a whole answer: framed, with OK unless it ends in a final code."""
    text = published if published.startswith(("\r", "\n")) else "\r\n" + published
    if not text.endswith("\n"):
        text += "\r\n"
    lines = [ln.strip() for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    final = ""
    if is_final(lines[-1]):
        cut = text.rstrip().rfind("\n") + 1
        text, final = text[:cut], text[cut:]
    else:
        final = "\r\nOK\r\n"
    return (before + text + after + final).encode()


def ids(entries: list[dict[str, Any]]) -> list[str]:
    return [f"{i}:{e['source'][:50]}" for i, e in enumerate(entries)]


# -- real modems' replies ------------------------------------------------------


@pytest.mark.parametrize("fx", FIXTURES["csq"], ids=ids(FIXTURES["csq"]))
def test_csq_replies(fx: dict[str, Any]) -> None:
    signal = parse_csq(parse_response(answer(fx["published"]), "AT+CSQ"))
    assert (signal.rssi, signal.ber, signal.dbm) == (fx["rssi"], fx["ber"], fx.get("dbm"))


def test_csq_scale_ends_and_errors() -> None:
    def dbm(rssi: int) -> int | None:
        return parse_csq(parse_response(answer(f"+CSQ: {rssi},0"), "AT+CSQ")).dbm

    assert (dbm(0), dbm(1), dbm(30), dbm(31), dbm(99)) == (-113, -111, -53, -51, None)
    assert (dbm(100), dbm(191)) == (-116, -25)  # TD-SCDMA
    for bad in ("+CSQ: 32,0", "+CSQ: 20,8", "+CSQ: 20", "+CSQ: x,0", "+CSQ: ²,0"):
        with pytest.raises(AtError):
            parse_csq(parse_response(answer(bad), "AT+CSQ"))
    with pytest.raises(AtError, match="failed"):
        parse_csq(parse_response(b"\r\nERROR\r\n", "AT+CSQ"))


@pytest.mark.parametrize("fx", FIXTURES["registration"], ids=ids(FIXTURES["registration"]))
def test_solicited_registration_replies(fx: dict[str, Any]) -> None:
    prefix = fx.get("prefix", "+CREG")
    reg = parse_registration(parse_response(answer(fx["published"]), f"AT{prefix}?"), prefix)
    assert reg is not None
    assert (reg.stat, reg.act) == (fx["stat"], fx.get("act"))


@pytest.mark.parametrize("fx", FIXTURES["unsolicited"], ids=ids(FIXTURES["unsolicited"]))
def test_unsolicited_registration_codes_are_not_the_reply(fx: dict[str, Any]) -> None:
    prefix = fx.get("prefix", "+CREG")
    reply = f"\r\n{prefix}: 0,4\r\n"  # the solicited reply: stat 4, which no code here has

    def stat(frame: bytes) -> int:
        reg = parse_registration(parse_response(frame, f"AT{prefix}?"), prefix)
        assert reg is not None
        return reg.stat

    assert stat(answer(reply, before=fx["published"])) == 4
    if not fx.get("ambiguous"):
        assert stat(answer(fx["published"], before=reply)) == 4
        with pytest.raises(AtError, match="no solicited"):
            stat(answer(fx["published"]))


def test_a_failed_registration_query_is_none() -> None:
    resp = parse_response(b"\r\n+CME ERROR: 4\r\n", "AT+CEREG?")
    assert parse_registration(resp, "+CEREG") is None


@pytest.mark.parametrize("fx", FIXTURES["cops"], ids=ids(FIXTURES["cops"]))
def test_cops_replies(fx: dict[str, Any]) -> None:
    op = parse_cops(parse_response(answer(fx["published"]), "AT+COPS?"))
    assert (op.name, op.act) == (fx.get("operator"), fx.get("act"))


def test_cops_without_a_line_or_failing() -> None:
    with pytest.raises(AtError, match=r"no \+COPS"):
        parse_cops(parse_response(b"\r\nOK\r\n", "AT+COPS?"))
    assert parse_cops(parse_response(b"\r\n+CME ERROR: 10\r\n", "AT+COPS?")).name is None
    utf8 = parse_cops(parse_response(answer('+COPS: 0,0,"Telefónica",7'), "AT+COPS?"))
    assert utf8.name == "Telefónica"


@pytest.mark.parametrize("fx", FIXTURES["cpin"], ids=ids(FIXTURES["cpin"]))
def test_cpin_replies(fx: dict[str, Any]) -> None:
    assert parse_cpin(parse_response(answer(fx["published"]), "AT+CPIN?")) == fx["sim"]


@pytest.mark.parametrize("fx", FIXTURES["identity"], ids=ids(FIXTURES["identity"]))
@pytest.mark.parametrize("noise", [f["published"] for f in FIXTURES["noise"]] + [""])
def test_identity_replies_among_unsolicited_codes(fx: dict[str, Any], noise: str) -> None:
    for cmd, attribute in (("AT+CGMI", "manufacturer"), ("AT+CGMM", "model")):
        published = fx[attribute]
        expected = next(ln for ln in published.replace("\r", "\n").split("\n") if ln.strip())
        frame = answer(published, before=noise)
        assert parse_text(parse_response(frame, cmd), cmd[2:]) == expected.strip()


def test_identity_with_a_prefix_or_an_error() -> None:
    assert parse_text(parse_response(answer("+CGMR: EC25EFAR06A06M4G"), "AT+CGMR"), "+CGMR") == (
        "EC25EFAR06A06M4G"
    )
    assert parse_text(parse_response(b"\r\nERROR\r\n", "AT+CGMR"), "+CGMR") is None
    assert parse_text(parse_response(b"\r\nOK\r\n", "AT+CGMR"), "+CGMR") is None


# -- framing -----------------------------------------------------------------------

#: One poll as a modem with echo still on, chatty with unsolicited codes, sends it.
TRANSCRIPT = (
    b"AT+CPIN?\r\r\n+CPIN: READY\r\n\r\nOK\r\n"
    b"\r\nRING\r\nAT+CSQ\r\r\n+CSQ: 18,99\r\n\r\n^RSSI: 17\r\n\r\nOK\r\n"
    b"AT+CREG?\r\r\n+CREG: 3\r\n\r\n+CREG: 0,1\r\n\r\nOK\r\n"
    b'AT+CEREG?\r\r\n+CEREG: 2,1,"00C3","0010AB01",7\r\n\r\n+CEREG: 1,0001\r\n\r\nOK\r\n'
    b'AT+COPS?\r\r\n+COPS: 0,0,"Vodafone",7\r\n\r\nOK\r\n'
)


def test_transcript_whole_byte_by_byte_and_with_trailing_bytes() -> None:
    whole = ResponseFramer().feed(TRANSCRIPT + b"\r\n+CS")
    assert len(whole) == 5 and b"".join(whole) == TRANSCRIPT[:-1]  # up to OK's CR
    framer = ResponseFramer()
    single = [f for i in range(len(TRANSCRIPT)) for f in framer.feed(TRANSCRIPT[i : i + 1])]
    assert single == whole
    for data in (TRANSCRIPT, TRANSCRIPT + b"\r\n+CREG: 5\r\n", TRANSCRIPT + b"\r\n+CS"):
        reading = parse_transcript(data)
        assert reading == Reading(
            state="ok",
            attributes={
                "rssi": 18,
                "ber": 99,
                "sim": "ready",
                "signal_dbm": -77,
                "registration": "home",
                "operator": "Vodafone",
                "access_technology": "LTE",
            },
        )


def test_frame_ends_after_the_final_code_and_its_line_end() -> None:
    assert find_response(b"\r\nOK\r\n\r\nRING") == 5  # the LF starts the next frame
    assert find_response(b"\r\nOK\r") == 5
    assert find_response(b"\nOK\n") == 4
    assert find_response(b"\r\nOK") is None  # "OK" could still become "OKAY"
    assert find_response(b"\r\n+CSQ: 1,2\r\n") is None
    assert find_response(b"") is None


@pytest.mark.parametrize(
    "final, error",
    [
        ("OK", None),
        ("ERROR", "ERROR"),
        ("+CME ERROR: 10", "10"),
        ("+CME ERROR: SIM not inserted", "SIM not inserted"),
        ("+CMS ERROR: 500", "500"),
        ("COMMAND NOT SUPPORT", "COMMAND NOT SUPPORT"),
    ],
)
def test_final_result_codes(final: str, error: str | None) -> None:
    frame = f"AT+X\r\r\n+X: 1\r\n\r\n{final}\r\n".encode()
    assert find_response(frame) == len(frame) - 1  # through the CR of CR LF
    resp = parse_response(frame, "AT+X")
    assert (resp.lines, resp.final, resp.error, resp.ok) == (("+X: 1",), final, error, not error)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\r\n+CSQ: \x00\x01\r\n", "control characters"),
        (b"\r\n\xff\xfe\r\nOK\r\n", "not AT text"),
        (b"\r\n\x1b[0m", "control characters"),
        (b"x" * (MAX_LINE + 1), "longer than"),
        (b"x" * (MAX_LINE + 1) + b"\r\n", "longer than"),
        (b"\r\nRING\r\n" * (MAX_RESPONSE // 8 + 1), "no final result code"),
    ],
)
def test_bytes_that_cannot_be_an_answer(data: bytes, message: str) -> None:
    with pytest.raises(AtError, match=message):
        find_response(data)


def test_a_multibyte_character_cut_in_two_waits() -> None:
    data = '\r\n+COPS: 0,0,"Telefónica"\r\n\r\nOK\r\n'.encode()
    cut = data.index("ó".encode()) + 1
    assert find_response(data[:cut]) is None
    assert find_response(data) == len(data) - 1


def test_parse_response_rejects_what_is_not_one_answer() -> None:
    for frame in (b"\r\n+CSQ: 1,2\r\n", b"\r\nOK\r\n\r\nOK\r\n", b"", b"\r\n\x07\r\nOK\r\n"):
        with pytest.raises(AtError):
            parse_response(frame, "AT+CSQ")


@given(st.binary(max_size=300))
@settings(max_examples=400)
def test_garbage_is_framed_or_an_at_error(data: bytes) -> None:
    try:
        whole = ResponseFramer().feed(data)
    except AtError:
        whole = None
    framer, single = ResponseFramer(), []
    try:
        for i in range(len(data)):
            single += framer.feed(data[i : i + 1])
    except AtError:
        return
    if whole is not None:
        assert single == whole
    for frame in single:
        parse_response(frame, "AT+CSQ")  # a frame always parses as an answer


_line = st.text(st.characters(min_codepoint=32, max_codepoint=0x17F), max_size=30)
_pieces = st.lists(
    st.one_of(
        _line,
        st.sampled_from(
            [
                "OK",
                "ERROR",
                "+CME ERROR: 10",
                "+CPIN: READY",
                "+CPIN: SIM PIN",
                "RING",
                "+CSQ: 18,99",
                "+CSQ: 99,99",
                "+CSQ: 40,1",
                "+CREG: 0,5",
                "+CREG: 2,1,,",
                '+CEREG: 2,3,"00C3"',
                "+CEREG: 7",
                '+COPS: 0,0,"A",9',
                "+COPS: 2",
                "+COPS: x",
            ]
        ),
        _line.map(lambda s: "+CSQ: " + s),
        _line.map(lambda s: "+CREG: " + s),
        _line.map(lambda s: "+COPS: " + s),
    ),
    max_size=25,
)


@given(_pieces, st.sampled_from(["\r\n", "\r", "\n"]))
@settings(max_examples=400)
def test_plausible_lines_give_a_reading_or_an_at_error(pieces: list[str], eol: str) -> None:
    data = "".join(eol + p + eol for p in pieces).encode()
    try:
        reading = parse_transcript(data)
    except AtError:
        return
    assert reading.state in ("ok", "warning", "fault")
    assert reading.flags == tuple(f for f in FLAGS if f in reading.flags)


@given(st.binary(max_size=400))
@settings(max_examples=300)
def test_any_bytes_give_a_reading_or_an_at_error(data: bytes) -> None:
    with contextlib.suppress(AtError):
        parse_transcript(data)


# -- the simulator's bytes, whatever its state, read back as that state --------

_states = st.fixed_dictionaries(
    {
        "rssi": st.sampled_from([0, 5, 6, 7, 20, 31, 99]),
        "reg": st.sampled_from(["home", "roaming", "searching", "denied", "unregistered"]),
        "sim": st.sampled_from(["ok", "no_sim", "sim_pin", "sim_puk"]),
        "tech": st.sampled_from(["gsm", "umts", "lte", "nbiot", "nr"]),
        "vendor": st.sampled_from(["generic", "huawei", "sierra", "novatel"]),
        "cmee": st.sampled_from([0, 1, 2]),
        "creg": st.sampled_from([0, 1, 2]),
        "echo": st.booleans(),
        "chatty": st.booleans(),
    }
)


@given(_states)
@settings(max_examples=200)
def test_simulator_state_reads_back(state: dict[str, Any]) -> None:
    sim = ModemSimulator(Path("/nonexistent/ttyMODEM"))
    for cmd in (f"rssi {state['rssi']}", state["reg"], f"tech {state['tech']}"):
        sim.command(cmd)
    sim.command(f"vendor {state['vendor']}")
    if state["sim"] != "ok":
        sim.command(state["sim"])
    if state["chatty"]:
        sim.command("chatty")
    setup = f"ATE{int(state['echo'])}\rAT+CMEE={state['cmee']}\r"
    setup += f"AT+CREG={state['creg']}\rAT+CEREG={state['creg']}\r"
    sim.respond(setup.encode())
    data = sim.respond("".join(c + "\r" for c in poll_commands(ModemOptions())).encode())
    reading = parse_transcript(data)

    # Without AT+CMEE=1 a missing SIM is a bare ERROR: the driver cannot tell it apart.
    no_sim = "sim_error" if state["cmee"] == 0 else "no_sim"
    sim_flag = {"no_sim": no_sim, "sim_pin": "sim_locked", "sim_puk": "sim_locked"}
    reg_flag = {
        "roaming": "roaming",
        "searching": "searching",
        "denied": "registration_denied",
        "unregistered": "not_registered",
    }
    expected = {sim_flag.get(state["sim"]) or reg_flag.get(state["reg"])} - {None}
    registered = state["sim"] == "ok" and state["reg"] in ("home", "roaming")
    if state["rssi"] == 99 and not registered:
        expected.add("no_signal")
    if state["rssi"] in (0, 5, 6):
        expected.add("weak_signal")
    assert set(reading.flags) == expected
    if registered:
        assert reading.attributes["operator"] == "posmon Mobile"


# -- the status rules ----------------------------------------------------------------


def status(
    cpin: str = "+CPIN: READY",
    csq: str = "+CSQ: 20,99",
    creg: str = "+CREG: 0,1",
    cereg: str | None = "+CEREG: 0,1",
    cops: str = '+COPS: 0,0,"Op",7',
    options: ModemOptions | None = None,
) -> Reading:
    def resp(cmd: str, text: str) -> Any:
        return parse_response(answer(text), cmd)

    answers = {
        "AT+CPIN?": resp("AT+CPIN?", cpin),
        "AT+CSQ": resp("AT+CSQ", csq),
        "AT+CREG?": resp("AT+CREG?", creg),
        "AT+COPS?": resp("AT+COPS?", cops),
    }
    if cereg is not None:
        answers["AT+CEREG?"] = resp("AT+CEREG?", cereg)
    return read_status(answers, options or ModemOptions())


@pytest.mark.parametrize(
    "kwargs, flags, state",
    [
        ({}, (), "ok"),
        ({"csq": "+CSQ: 6,99"}, ("weak_signal",), "warning"),  # −101 dBm
        ({"csq": "+CSQ: 7,99"}, (), "ok"),  # −99 dBm
        ({"csq": "+CSQ: 0,99"}, ("weak_signal",), "warning"),
        ({"csq": "+CSQ: 99,99"}, (), "ok"),  # registered: "unknown", not no signal
        (
            {"csq": "+CSQ: 99,99", "creg": "+CREG: 0,0", "cereg": "+CEREG: 0,0"},
            ("not_registered", "no_signal"),
            "fault",
        ),
        ({"cpin": "+CME ERROR: 10", "creg": "+CREG: 0,0"}, ("no_sim",), "fault"),
        ({"cpin": "+CPIN: NOT INSERTED"}, ("no_sim",), "fault"),
        ({"cpin": "+CPIN: SIM PIN", "creg": "+CREG: 0,0"}, ("sim_locked",), "fault"),
        ({"cpin": "+CPIN: PH-NET PIN"}, ("sim_locked",), "fault"),
        ({"cpin": "+CPIN: SIM PIN2"}, (), "ok"),
        ({"cpin": "+CME ERROR: 13"}, ("sim_error",), "fault"),
        ({"cpin": "ERROR"}, ("sim_error",), "fault"),
        ({"cpin": "+CME ERROR: 14"}, ("sim_busy",), "warning"),
        ({"cpin": "+CPIN: NOT READY"}, ("sim_busy",), "warning"),
        ({"creg": "+CREG: 0,0", "cereg": "+CEREG: 0,0"}, ("not_registered",), "fault"),
        ({"creg": "+CREG: 0,4", "cereg": "+CEREG: 0,4"}, ("not_registered",), "fault"),
        ({"creg": "+CREG: 0,8", "cereg": "+CEREG: 0,0"}, ("not_registered",), "fault"),
        ({"creg": "+CREG: 0,2", "cereg": "+CEREG: 0,3"}, ("searching",), "warning"),
        ({"creg": "+CREG: 0,3", "cereg": "+CEREG: 0,0"}, ("registration_denied",), "fault"),
        ({"creg": "+CREG: 0,5", "cereg": "+CEREG: 0,5"}, ("roaming",), "warning"),
        ({"creg": "+CREG: 0,7", "cereg": "+CEREG: 0,0"}, ("roaming",), "warning"),
        ({"creg": "+CREG: 0,0", "cereg": "+CEREG: 0,1"}, (), "ok"),  # LTE only
        ({"creg": "+CREG: 0,1", "cereg": "ERROR"}, (), "ok"),  # a 3G modem
        ({"creg": "+CREG: 0,6"}, (), "ok"),  # home, SMS only
        (
            {"creg": "+CREG: 0,3", "csq": "+CSQ: 2,99", "cereg": "+CEREG: 0,0"},
            ("registration_denied", "weak_signal"),
            "fault",
        ),
    ],
)
def test_flags_and_states(kwargs: dict[str, str], flags: tuple[str, ...], state: str) -> None:
    reading = status(**kwargs)
    assert (reading.flags, reading.state) == (flags, state)
    assert (reading.reason is None) == (state == "ok")


def test_options_change_the_rules() -> None:
    assert status(csq="+CSQ: 10,99", options=ModemOptions(weak_dbm=-90)).flags == ("weak_signal",)
    assert status(csq="+CSQ: 6,99", options=ModemOptions(weak_dbm=-105)).flags == ()
    roaming: dict[str, Any] = {"creg": "+CREG: 0,5", "cereg": "+CEREG: 0,5"}
    reading = status(**roaming, options=ModemOptions(allow_roaming=True))
    assert reading.flags == () and reading.attributes["registration"] == "roaming"
    no_cereg = ModemOptions(use_cereg=False)
    assert "AT+CEREG?" not in poll_commands(no_cereg)
    assert status(creg="+CREG: 0,0", cereg=None, options=no_cereg).flags == ("not_registered",)


def test_attributes_and_reason_words() -> None:
    reading = status(
        csq="+CSQ: 3,2",
        creg='+CREG: 2,3,"3E3E","1E7A2",2',
        cereg="+CEREG: 0,0",
        cops="+COPS: 0",
    )
    assert reading.attributes == {
        "rssi": 3,
        "ber": 2,
        "sim": "ready",
        "signal_dbm": -107,
        "registration": "denied",
        "access_technology": "UMTS",  # from +CREG's <AcT>: +COPS has none
    }
    assert reading.reason == (
        "the mobile network refuses the SIM — call the operator; "
        "weak mobile signal — move the modem or its antenna (-107 dBm)"
    )


# -- options and kind -------------------------------------------------------------


def test_parse_options() -> None:
    assert parse_options(Section("a.toml", "device[0]", {}), Path()) == ModemOptions()
    sec = Section(
        "a.toml", "device[0]", {"weak_dbm": -95, "use_cereg": False, "allow_roaming": True}
    )
    assert parse_options(sec, Path()) == ModemOptions(-95.0, False, True)
    assert sec.known == ["weak_dbm", "use_cereg", "allow_roaming"]
    for table, key in (
        ({"weak_dbm": -120}, "weak_dbm"),
        ({"weak_dbm": "-90"}, "weak_dbm"),
        ({"use_cereg": 1}, "use_cereg"),
        ({"allow_roaming": "yes"}, "allow_roaming"),
    ):
        with pytest.raises(ConfigError, match=rf"device\[0\]\.{key}"):
            parse_options(Section("a.toml", "device[0]", table), Path())


def test_kind() -> None:
    assert (KIND.name, KIND.default_baudrate, KIND.create) == ("at_modem", 115200, ModemDriver)
    assert KIND.parse_options is parse_options


# -- the driver against the simulator ---------------------------------------------


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[ModemSimulator]:
    s = ModemSimulator(tmp_path / "ttyMODEM")
    s._loop = asyncio.get_running_loop()
    s.plug()
    yield s
    s.unplug()


@pytest.fixture
async def driver(sim: ModemSimulator) -> AsyncIterator[ModemDriver]:
    d = ModemDriver(DeviceSpec("modem", "at_modem", str(sim.link), 115200, timeout_s=2.0))
    yield d
    await d.close()


async def test_first_poll_sets_the_modem_up_and_reads_it(
    sim: ModemSimulator, driver: ModemDriver
) -> None:
    assert sim.echo and sim.cmee == 0
    reading = await driver.poll()
    assert not sim.echo and sim.cmee == 1
    assert reading == Reading(
        state="ok",
        attributes={
            "rssi": 20,
            "ber": 99,
            "sim": "ready",
            "signal_dbm": -73,
            "registration": "home",
            "operator": "posmon Mobile",
            "access_technology": "LTE",
            "manufacturer": "POSMON",
            "model": "SIM-4G",
            "firmware": "1.0.0",
        },
    )
    assert await driver.poll() == reading


@pytest.mark.parametrize(
    "commands, flags, attributes",
    [
        (["signal -95"], (), {"signal_dbm": -95, "rssi": 9}),
        (["signal -105"], ("weak_signal",), {"signal_dbm": -105}),
        (["rssi 99"], (), {"rssi": 99, "registration": "home"}),
        (["rssi 99", "unregistered"], ("not_registered", "no_signal"), {"rssi": 99}),
        (["unregistered"], ("not_registered",), {"registration": "not_registered"}),
        (["searching"], ("searching",), {"registration": "searching"}),
        (["denied"], ("registration_denied",), {"registration": "denied"}),
        (["roaming"], ("roaming",), {"registration": "roaming"}),
        (["no_sim"], ("no_sim",), {"sim": "not_inserted"}),
        (["sim_pin"], ("sim_locked",), {"sim": "sim_pin"}),
        (["sim_puk"], ("sim_locked",), {"sim": "sim_puk"}),
        (["operator Vodafone DE"], (), {"operator": "Vodafone DE"}),
        (["tech umts"], (), {"access_technology": "UMTS", "registration": "home"}),
        (["tech nbiot"], (), {"access_technology": "NB-IoT"}),
        (["tech gsm"], (), {"access_technology": "GSM"}),
        (["tech gsm", "searching"], ("searching",), {"access_technology": None}),
        (["chatty"], (), {"registration": "home"}),
        (["chatty", "vendor huawei"], (), {"manufacturer": "huawei", "model": "E1550"}),
        (["vendor novatel"], (), {"model": "E362"}),
        (["urc RING", "urc +CREG: 3"], (), {"registration": "home"}),
        (["denied", "no_sim", "signal -110", "ok"], (), {"signal_dbm": -73}),
    ],
)
async def test_faults(
    sim: ModemSimulator,
    driver: ModemDriver,
    commands: list[str],
    flags: tuple[str, ...],
    attributes: dict[str, Any],
) -> None:
    for cmd in commands:
        sim.command(cmd)
    reading = await driver.poll()
    assert reading.flags == flags, reading.reason
    assert {k: reading.attributes.get(k) for k in attributes} == attributes
    fault = any(f in FAULT_FLAGS for f in flags)
    assert reading.state == ("fault" if fault else "warning" if flags else "ok")


async def test_faults_come_and_go_between_polls(sim: ModemSimulator, driver: ModemDriver) -> None:
    sim.respond(b"AT+CREG=2\r")  # unsolicited +CREG with <lac>,<ci> on every change
    assert (await driver.poll()).state == "ok"
    for fault, flag in (("denied", "registration_denied"), ("roaming", "roaming")):
        sim.command(fault)  # sends +CREG: <stat> unasked, between two polls
        assert (await driver.poll()).flags == (flag,)
        sim.command("ok")
        assert (await driver.poll()).flags == ()


class CountingModem(ModemSimulator):
    """Counts the command lines it is sent; ``chains=False`` answers ERROR to a chained one."""

    def __init__(self, link: Path, *, chains: bool = True) -> None:
        super().__init__(link)
        self.chains = chains
        self.lines: list[str] = []
        self._nested = False

    def execute(self, text: str) -> tuple[list[str], str | None]:
        if self._nested:  # a part of a chained line
            return super().execute(text)
        self.lines.append(text)
        if ";" in text and not self.chains:
            return [], "ERROR"
        self._nested = True
        try:
            return super().execute(text)
        finally:
            self._nested = False


@pytest.mark.parametrize("chains", [True, False])
async def test_a_poll_asks_in_one_chained_line_where_the_modem_takes_it(
    tmp_path: Path, chains: bool
) -> None:
    sim = CountingModem(tmp_path / "ttyCHAIN", chains=chains)
    sim._loop = asyncio.get_running_loop()
    sim.plug()
    driver = ModemDriver(DeviceSpec("modem", "at_modem", str(sim.link), 115200, timeout_s=2.0))
    try:
        await driver.poll()  # set-up and the first status
        sim.lines.clear()
        for _ in range(3):
            reading = await driver.poll()
            assert reading.state == "ok" and reading.attributes["operator"]
        chained = [line for line in sim.lines if ";" in line]
        if chains:  # one round trip per poll
            assert sim.lines == ["AT+CPIN?;+CSQ;+CREG?;+CEREG?;+COPS?"] * 3
        else:  # it said ERROR once, on the first poll: one command at a time since
            assert chained == [] and len(sim.lines) == 3 * 5
        sim.command("no_sim")  # a chained line stops at +CPIN?'s error: asked one by one
        assert "no_sim" in (await driver.poll()).flags
    finally:
        await driver.close()
        sim.unplug()


async def test_unplug_is_gone_and_replug_is_found_again(
    sim: ModemSimulator, driver: ModemDriver
) -> None:
    assert (await driver.poll()).state == "ok"
    sim.command("unplug")
    with pytest.raises(DeviceGone):
        await driver.poll()
    with pytest.raises(DeviceGone, match="no such device"):
        await driver.poll()
    sim.command("replug")
    assert sim.echo  # a power cycle: echo on again
    reading = await driver.poll()
    assert reading.state == "ok" and reading.attributes["manufacturer"] == "POSMON"
    assert not sim.echo  # set up again


async def test_silence_is_device_silent(sim: ModemSimulator) -> None:
    driver = ModemDriver(DeviceSpec("modem", "at_modem", str(sim.link), timeout_s=0.3))
    try:
        await driver.poll()
        sim.command("silence")
        with pytest.raises(DeviceSilent, match=r"no answer to AT\+CPIN\?"):
            await driver.poll()
        sim.command("ok")
        assert (await driver.poll()).state == "ok"
        assert not sim.echo  # set up again after the silence
    finally:
        await driver.close()


async def test_garbage_is_a_protocol_error(sim: ModemSimulator, driver: ModemDriver) -> None:
    await driver.poll()
    sim.command("garbage")
    with pytest.raises(DeviceProtocolError, match=r"AT\+CPIN\?[;:]") as info:
        await driver.poll()
    assert isinstance(info.value, AtError)
    sim.command("ok")
    assert (await driver.poll()).state == "ok"


async def test_a_modem_held_by_another_program_is_busy(
    sim: ModemSimulator, driver: ModemDriver
) -> None:
    other = SerialLink(str(sim.link))
    other.open()
    try:
        with pytest.raises(DevicePortBusy):
            await driver.poll()
    finally:
        other.close()
    assert (await driver.poll()).state == "ok"


async def test_through_posmon_agent_simulate(tmp_path: Path) -> None:
    link = tmp_path / "ttyMODEM"
    async with simulate("modem", link) as sim:
        assert "signal DBM" in sim.help
        driver = ModemDriver(DeviceSpec("modem", "at_modem", str(link), 115200, timeout_s=2.0))
        try:
            assert (await driver.poll()).state == "ok"
            assert await sim.say("no_sim") == "ok SIM absent"
            assert (await driver.poll()).flags == ("no_sim",)
            assert await sim.say("signal -104") == "ok signal -103 dBm (rssi 5)"
            assert (await driver.poll()).flags == ("no_sim", "weak_signal")
            assert (await sim.say("explode")).startswith("error unknown command explode")
            assert await sim.say("unplug") == "ok unplugged"
            with pytest.raises(DeviceGone):
                await driver.poll()
            assert (await sim.say("replug")).startswith("ok plugged in at")
            assert await sim.say("ok") == "ok all faults cleared"
            assert (await driver.poll()).state == "ok"
        finally:
            await driver.close()
        assert await sim.end_input() == 0  # end of input: it unplugs and exits
    assert not link.exists()
