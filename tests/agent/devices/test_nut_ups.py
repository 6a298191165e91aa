"""The nut_ups driver: the status mapping, its options, and polls of Debian's real upsd.

upsd runs on a free port of 127.0.0.1 fed by dummy-ups (see
:mod:`tests.agent.devices.upsd` for what NUT 2.8.0 does that these tests
rely on). A few cases that upsd 2.8 cannot produce for a read-only client
(ACCESS-DENIED, garbage, a surplus line) are played by a scripted asyncio
server on a free port instead.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.configkit import ConfigError, Section, reject_unknown
from agent.devices.base import DeviceGone, DeviceSilent, DeviceSpec, Reading
from agent.devices.nut_net import (
    DEFAULT_PORT,
    Err,
    ListReply,
    NutError,
    ReplyReader,
    list_vars,
    split_hostport,
)
from agent.devices.nut_ups import (
    KIND,
    NutOptions,
    NutUpsDriver,
    parse_options,
    reading_for_err,
    reading_from_vars,
)
from agent.devices.registry import driver_kind
from agent.devices.settings import parse_devices
from agent.devices.supervisor import poll_once
from tests.agent.devices.upsd import Upsd, free_tcp_port, running_upsd

# ── the pure part ───────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("status", "state", "flags"),
    [
        ("OL CHRG", "ok", ()),
        ("OL", "ok", ()),
        ("OL HB", "ok", ()),
        ("OB DISCHRG", "warning", ("on_battery",)),
        ("OB LB", "fault", ("on_battery", "battery_low")),
        ("LB OB DISCHRG", "fault", ("on_battery", "battery_low")),
        ("OL BOOST", "warning", ("bypass_boost",)),
        ("OL TRIM", "warning", ("bypass_boost",)),
        ("OL BYPASS BOOST", "warning", ("bypass_boost",)),
        ("ALARM OL", "fault", ("ups_failed",)),
        ("OL CAL", "warning", ("test_in_progress",)),
        ("FSD OB LB", "fault", ("on_battery", "battery_low", "shutdown_active")),
        ("OL OVER", "fault", ("overload",)),
        ("OL RB", "warning", ("replace_battery",)),
        ("OL NEWTOKEN", "ok", ()),
        ("OFF", "fault", ()),
        ("OFF RB", "fault", ("replace_battery",)),
        ("WAIT", "disconnected", ()),
    ],
)
def test_status_tokens(status: str, state: str, flags: tuple[str, ...]) -> None:
    reading = reading_from_vars({"ups.status": status}, "ups")
    assert (reading.state, reading.flags) == (state, flags)
    assert reading.attributes["ups_status"] == status
    assert (reading.reason is None) == (state == "ok")


def test_reasons_in_words() -> None:
    off = reading_from_vars({"ups.status": "OFF RB"}, "u")
    assert (
        off.reason
        == "the UPS output is off — the equipment on it has no power; replace the battery"
    )
    lb = reading_from_vars({"ups.status": "OB LB"}, "u")
    assert lb.reason == "battery low — the UPS will shut down soon; on battery — mains power failed"
    alarm = reading_from_vars({"ups.status": "ALARM OL", "ups.alarm": "Fan failure!"}, "u")
    assert alarm.reason == "the UPS reports a failure; alarm: Fan failure!"
    wait = reading_from_vars({"ups.status": "WAIT"}, "u")
    assert wait.reason == "upsd is waiting for the first data from the driver of UPS 'u'"


def test_no_status_is_a_fault() -> None:
    reading = reading_from_vars({"ups.model": "X"}, "u")
    assert reading.state == "fault"
    assert reading.reason == "upsd gives no ups.status for UPS 'u'"
    assert reading.attributes == {"ups_name": "u", "model": "X"}


def test_attributes_are_flat_scalars() -> None:
    variables = {
        "ups.status": "OL CHRG",
        "ups.mfr": "Acme",
        "ups.model": "Backup 650",
        "ups.firmware": "1.2",
        "ups.serial": "S1",
        "battery.charge": "97",
        "battery.runtime": "1800.6",
        "battery.voltage": "13.50",
        "input.voltage": " 230.5 ",
        "input.frequency": "50.0",
        "output.voltage": "nan",  # left out: not a finite number
        "ups.load": "n/a",  # left out
        "ups.temperature": "1e999",  # left out: overflows to inf
        "driver.name": "dummy-ups",  # not reported
    }
    assert reading_from_vars(variables, "u").attributes == {
        "ups_name": "u",
        "ups_status": "OL CHRG",
        "manufacturer": "Acme",
        "model": "Backup 650",
        "firmware": "1.2",
        "serial": "S1",
        "battery_charge_pct": 97.0,
        "battery_runtime_s": 1801,
        "battery_voltage": 13.5,
        "input_voltage": 230.5,
        "frequency_hz": 50.0,
    }


@pytest.mark.parametrize(
    ("code", "state", "words"),
    [
        ("DATA-STALE", "disconnected", "lost contact with the UPS"),
        ("DRIVER-NOT-CONNECTED", "disconnected", "is not running"),
        ("UNKNOWN-UPS", "fault", "has no UPS named 'ups'"),
        ("ACCESS-DENIED", "fault", "denied access"),
        ("USERNAME-REQUIRED", "fault", "did not accept the login"),
        ("INVALID-PASSWORD", "fault", "did not accept the login"),
        ("VAR-NOT-SUPPORTED", "fault", "answered ERR VAR-NOT-SUPPORTED to LIST VAR ups"),
    ],
)
def test_err_answers(code: str, state: str, words: str) -> None:
    reading = reading_for_err(Err(code), "LIST VAR ups", "ups", "nas:3493")
    assert reading.state == state
    assert reading.flags == ()
    assert reading.reason is not None
    assert words in reading.reason
    assert "nas:3493" in reading.reason


@given(st.binary(max_size=300))
def test_garbage_invariant_down_to_the_reading(data: bytes) -> None:
    """Whatever upsd sends to LIST VAR: a reading, an ERR, more wanted, or NutError."""
    reader = ReplyReader(("LIST", "VAR", "ups"))
    try:
        reply = reader.feed(b"BEGIN LIST VAR ups\n" + data + b"\nEND LIST VAR ups\n")
        if isinstance(reply, ListReply):
            assert isinstance(reading_from_vars(list_vars(reply), "ups"), Reading)
    except NutError:
        return


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=30)))
def test_any_variables_give_a_reading(variables: dict[str, str]) -> None:
    assert isinstance(reading_from_vars(variables, "ups"), Reading)


@pytest.mark.parametrize(
    ("port", "host_port"),
    [
        ("nas", ("nas", DEFAULT_PORT)),
        ("nas:3494", ("nas", 3494)),
        ("192.0.2.1:3493", ("192.0.2.1", 3493)),
        ("[::1]:3495", ("::1", 3495)),
        ("[fe80::1]", ("fe80::1", DEFAULT_PORT)),
        ("::1", ("::1", DEFAULT_PORT)),
    ],
)
def test_split_hostport(port: str, host_port: tuple[str, int]) -> None:
    assert split_hostport(port) == host_port


@pytest.mark.parametrize(
    ("port", "match"),
    [
        ("nas:http", "must be a number"),
        ("nas:0", "must be a number"),
        ("nas:70000", "must be a number"),
        ("nas:", "must be a number"),
        ("[::1]:", "must be a number"),
        ("nas:" + "9" * 5000, "must be a number"),
        ("nas:３４９３", "must be a number"),
        (":3493", "expected host or host:port"),
        ("", "expected host or host:port"),
        ("[::1", "brackets"),
        ("[::1]x", "brackets"),
        ("ups@nas", "the ups key"),
    ],
)
def test_split_hostport_refuses(port: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        split_hostport(port)


@given(st.text(max_size=40))
def test_split_hostport_any_text(text: str) -> None:
    try:
        host, port = split_hostport(text)
    except ValueError:
        return
    assert host and 1 <= port <= 65535


# ── options ─────────────────────────────────────────────────────────────────


def options(table: dict[str, object], base: Path = Path("/")) -> NutOptions:
    sec = Section("agent.toml", "device[0]", dict(table))
    parsed = parse_options(sec, base)
    reject_unknown(sec)
    return parsed


def test_options_default_and_given(tmp_path: Path) -> None:
    assert options({}) == NutOptions()
    assert options({"ups": "rack-1"}) == NutOptions(ups="rack-1")
    with_password = options({"username": "mon", "password": "s3 cret"})
    assert with_password == NutOptions(username="mon", password="s3 cret")
    assert "s3 cret" not in repr(with_password)
    (tmp_path / "nut.pw").write_text("from file\nsecond line\n")
    from_file = options({"username": "mon", "password_file": "nut.pw"}, tmp_path)
    assert from_file.password == "from file"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"ups": "two words"}, "device[0].ups: must be upsd's name of the UPS"),
        ({"ups": 3}, "device[0].ups: expected a string"),
        ({"username": "mon"}, "device[0].password: missing: username is set"),
        ({"password": "x"}, "device[0].username: missing: password is set"),
        ({"username": "m", "password": "x", "password_file": "f"}, "either password or"),
        ({"username": "m", "password_file": "/nonexistent/pw"}, "password_file: /nonexistent"),
        ({"username": "m\nLOGOUT", "password": "x"}, "device[0].username: must not contain"),
        ({"username": "m", "password": "x\ry"}, "device[0].password: must not contain"),
        ({"user": "m"}, "device[0].user: unknown key; did you mean 'username'?"),
    ],
)
def test_options_refused(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        options(table)
    assert message in str(raised.value)


def test_empty_password_file(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match="it is empty"):
        options({"username": "m", "password_file": str(tmp_path / "empty")})


def test_registered_kind() -> None:
    assert driver_kind("nut_ups") is KIND
    assert KIND.port_kind == "hostport"
    assert KIND.create is NutUpsDriver


# ── against Debian's upsd ───────────────────────────────────────────────────

UPSES = {
    "online": (
        "ups.status: OL CHRG\nups.mfr: Acme\nups.model: Backup 650\nups.firmware: 1.2\n"
        "battery.charge: 100\nbattery.runtime: 1800\ninput.voltage: 230.5\n"
        "output.voltage: 230.0\nups.load: 23\n"
    ),
    "onbattery": "ups.status: OB DISCHRG\nbattery.charge: 80\n",
    "lowbattery": "ups.status: OB LB\nbattery.charge: 9\n",
    "boost": "ups.status: OL BOOST\ninput.voltage: 190\n",
    "alarm": 'ups.status: ALARM OL\nups.alarm: "Fan failure!"\n',
    "shutdown": "ups.status: FSD OB LB\n",
    "off": "ups.status: OFF\n",
    "quoted": 'ups.status: OL\nups.model: "Backup \\"650\\" pro \\\\x"\n',
}

EXPECTED = {
    "online": ("ok", ()),
    "onbattery": ("warning", ("on_battery",)),
    "lowbattery": ("fault", ("on_battery", "battery_low")),
    "boost": ("warning", ("bypass_boost",)),
    "alarm": ("fault", ("ups_failed",)),
    "shutdown": ("fault", ("on_battery", "battery_low", "shutdown_active")),
    "off": ("fault", ()),
    "quoted": ("ok", ()),
}

PollUntil = Callable[[NutUpsDriver, Callable[[Reading], bool], str], Awaitable[Reading]]


@pytest.fixture(scope="module")
def upsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upsd]:
    """One upsd serving every UPS above (their states never change)."""
    with running_upsd(tmp_path_factory.mktemp("upsd"), UPSES) as daemon:
        yield daemon


@pytest.fixture
async def drivers() -> AsyncIterator[Callable[..., NutUpsDriver]]:
    """Make drivers; every one is closed at the end."""
    made: list[NutUpsDriver] = []

    def make(
        port: str, ups: str | None = None, timeout_s: float = 5.0, **more: str
    ) -> NutUpsDriver:
        spec = DeviceSpec(
            "ups", "nut_ups", port, timeout_s=timeout_s, options=NutOptions(ups, **more)
        )
        made.append(NutUpsDriver(spec))
        return made[-1]

    yield make
    for driver in made:
        await driver.close()


async def poll_until(
    driver: NutUpsDriver, ok: Callable[[Reading], bool], what: str, timeout_s: float = 30.0
) -> Reading:
    """Poll until ``ok(reading)`` (a hang guard: fail after ``timeout_s``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        reading = await driver.poll()
        if ok(reading):
            return reading
        if loop.time() > deadline:
            raise AssertionError(f"no reading where {what} after {timeout_s} s; last: {reading}")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("ups", list(UPSES))
async def test_each_state(upsd: Upsd, drivers: Callable[..., NutUpsDriver], ups: str) -> None:
    reading = await drivers(upsd.address, ups).poll()
    assert (reading.state, reading.flags) == EXPECTED[ups], reading
    assert reading.attributes["ups_name"] == ups


async def test_attributes_and_reasons(upsd: Upsd, drivers: Callable[..., NutUpsDriver]) -> None:
    online = await drivers(upsd.address, "online").poll()
    assert online.reason is None
    assert online.attributes == {
        "ups_name": "online",
        "ups_status": "OL CHRG",
        "manufacturer": "Acme",
        "model": "Backup 650",
        "firmware": "1.2",
        "battery_charge_pct": 100.0,
        "battery_runtime_s": 1800,
        "input_voltage": 230.5,
        "output_voltage": 230.0,
        "load_pct": 23.0,
    }
    quoted = await drivers(upsd.address, "quoted").poll()
    assert quoted.attributes["model"] == 'Backup "650" pro \\x'
    alarm = await drivers(upsd.address, "alarm").poll()
    assert alarm.reason == "the UPS reports a failure; alarm: Fan failure!"
    off = await drivers(upsd.address, "off").poll()
    assert off.reason is not None and off.reason.startswith("the UPS output is off")


async def test_without_a_name_the_first_ups_listed(
    upsd: Upsd, drivers: Callable[..., NutUpsDriver]
) -> None:
    first = upsd.ask("LIST UPS").splitlines()[1].split()[1]
    reading = await drivers(upsd.address).poll()
    assert reading.attributes["ups_name"] == first
    assert (reading.state, reading.flags) == EXPECTED[first]


async def test_unknown_ups_is_a_fault_naming_it(
    upsd: Upsd, drivers: Callable[..., NutUpsDriver]
) -> None:
    driver = drivers(upsd.address, "rack-9")
    for _ in range(2):  # the connection stays usable after an ERR
        reading = await driver.poll()
        assert reading.state == "fault"
        assert reading.reason is not None
        assert reading.reason.startswith(f"upsd at {upsd.address} has no UPS named 'rack-9'")
        assert "'online'" in reading.reason and "'quoted'" in reading.reason


async def test_nothing_listening_is_gone(drivers: Callable[..., NutUpsDriver]) -> None:
    driver = drivers(f"127.0.0.1:{free_tcp_port()}")
    with pytest.raises(DeviceGone, match="connection refused — is upsd running"):
        await driver.poll()


async def test_a_bad_port_is_a_fault(drivers: Callable[..., NutUpsDriver]) -> None:
    reading = await drivers("nas:http").poll()
    assert reading.state == "fault"
    assert (
        reading.reason
        == "port 'nas:http' is not upsd's address: the port must be a number 1–65535, got 'http'"
    )


async def test_upsd_killed_is_gone_then_found_again_on_restart(
    tmp_path: Path, drivers: Callable[..., NutUpsDriver]
) -> None:
    with running_upsd(tmp_path, {"ups": UPSES["online"]}) as upsd:
        driver = drivers(upsd.address, "ups")
        assert (await driver.poll()).state == "ok"
        upsd.stop()
        with pytest.raises(DeviceGone, match="cannot reach upsd"):
            await driver.poll()
        with pytest.raises(DeviceGone, match="cannot reach upsd"):
            await driver.poll()
        upsd.start()
        assert (await driver.poll()).state == "ok"


async def test_upsd_restarted_between_polls_is_not_noticed(
    tmp_path: Path, drivers: Callable[..., NutUpsDriver]
) -> None:
    """The connection kept from the last poll is dead: the poll retries on a new one."""
    with running_upsd(tmp_path, {"ups": UPSES["online"]}) as upsd:
        driver = drivers(upsd.address, "ups")
        assert (await driver.poll()).state == "ok"
        upsd.stop()
        upsd.start()
        assert (await driver.poll()).state == "ok"


async def test_upsd_paused_is_silent(tmp_path: Path, drivers: Callable[..., NutUpsDriver]) -> None:
    with running_upsd(tmp_path, {"ups": UPSES["online"]}) as upsd:
        driver = drivers(upsd.address, "ups", timeout_s=0.5)
        assert (await driver.poll()).state == "ok"
        upsd.pause()
        try:
            with pytest.raises(DeviceSilent, match=r"did not answer LIST VAR ups within 0\.5 s"):
                await driver.poll()
        finally:
            upsd.resume()
        assert (await driver.poll()).state == "ok"


async def test_driver_killed_is_disconnected_then_back(
    tmp_path: Path, drivers: Callable[..., NutUpsDriver]
) -> None:
    with running_upsd(tmp_path, {"ups": UPSES["onbattery"]}) as upsd:
        driver = drivers(upsd.address, "ups")
        assert (await driver.poll()).state == "warning"
        upsd.kill_driver("ups")
        seen: list[Reading] = []

        def not_connected(reading: Reading) -> bool:
            seen.append(reading)
            return "(ERR DRIVER-NOT-CONNECTED)" in (reading.reason or "")

        gone = await poll_until(driver, not_connected, "upsd misses the driver")
        assert gone.state == "disconnected"
        assert gone.reason == (
            f"the NUT driver for UPS 'ups' is not running on the upsd host {upsd.address} "
            "(ERR DRIVER-NOT-CONNECTED) — start it (upsdrvctl start)"
        )
        # upsd may first reach the dying driver's socket once more and say WAIT
        assert {r.state for r in seen} <= {"warning", "disconnected"}, seen
        upsd.start_drivers("ups")  # upsd connects to it again by itself
        back = await poll_until(driver, lambda r: r.state != "disconnected", "it is back")
        assert (back.state, back.flags) == ("warning", ("on_battery",))


async def test_driver_not_answering_is_stale(
    tmp_path: Path, drivers: Callable[..., NutUpsDriver]
) -> None:
    with running_upsd(tmp_path, {"ups": UPSES["online"]}, maxage_s=2) as upsd:
        driver = drivers(upsd.address, "ups")
        assert (await driver.poll()).state == "ok"
        upsd.pause_driver("ups")
        try:
            stale = await poll_until(driver, lambda r: r.state != "ok", "the data is stale")
        finally:
            upsd.resume_driver("ups")
        assert stale.state == "disconnected"
        assert stale.reason is not None and "(ERR DATA-STALE)" in stale.reason
        assert (await poll_until(driver, lambda r: r.state == "ok", "fresh again")).flags == ()


async def test_no_data_yet_is_wait(tmp_path: Path, drivers: Callable[..., NutUpsDriver]) -> None:
    """A driver that has not sent its first data: upsd says WAIT (until MAXAGE, 60 s here)."""
    with running_upsd(tmp_path, {"ups": UPSES["online"]}, paused=("ups",), maxage_s=60) as upsd:
        assert upsd.status("ups") == "WAIT"
        reading = await drivers(upsd.address, "ups").poll()
        assert reading.state == "disconnected"
        assert reading.reason == "upsd is waiting for the first data from the driver of UPS 'ups'"


async def test_login_and_one_connection_for_many_polls(
    tmp_path: Path, drivers: Callable[..., NutUpsDriver]
) -> None:
    password = 'pass word "with" \\ quotes'
    users = {"monitor": password}
    with running_upsd(tmp_path, {"ups": UPSES["online"]}, users=users, debug=True) as upsd:
        before = len(upsd.log())
        driver = drivers(upsd.address, "ups", username="monitor", password=password)
        for _ in range(3):
            assert (await driver.poll()).state == "ok"
        seen = upsd.log()[before:]
        assert seen.count("Connect from 127.0.0.1") == 1
        assert seen.count("Calling command handler for USERNAME") == 1
        assert seen.count("Calling command handler for PASSWORD") == 1
        assert seen.count("Calling command handler for LIST") == 3
        assert "ERR" not in seen


async def test_from_the_config_file_to_the_supervisor(upsd: Upsd) -> None:
    """A [[device]] table read by the agent's config code, polled as the supervisor does."""
    text = f"""
[[device]]
name = "ups"
kind = "nut_ups"
port = "{upsd.address}"
timeout_s = 5
ups = "onbattery"
username = "monitor"
password = "secret"

[[device]]
name = "nowhere"
kind = "nut_ups"
port = "127.0.0.1:{free_tcp_port()}"
"""
    root = Section("agent.toml", "", tomllib.loads(text))
    specs = parse_devices(root, Path("/"))
    reject_unknown(root)
    assert specs[0].options == NutOptions("onbattery", "monitor", "secret")
    drivers = [driver_kind(spec.kind).create(spec) for spec in specs]
    try:
        reading, trouble = await poll_once(specs[0], drivers[0])
        assert (reading.state, reading.flags, trouble) == ("warning", ("on_battery",), "reading")
        reading, trouble = await poll_once(specs[1], drivers[1])
        assert (reading.state, trouble) == ("disconnected", "gone")
        assert reading.reason is not None and reading.reason.startswith("cannot reach upsd at")
    finally:
        for driver in drivers:
            await driver.close()


# ── cases upsd 2.8 does not produce for a reader: a scripted server ─────────


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[dict[str, bytes]], Awaitable[str]]]:
    """A server on a free port that answers each request line from a script."""
    servers: list[asyncio.Server] = []

    async def start(script: dict[str, bytes]) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while line := await reader.readline():
                answer = script.get(line.decode().strip())
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_access_denied_is_a_fault(
    scripted: Callable[[dict[str, bytes]], Awaitable[str]],
    drivers: Callable[..., NutUpsDriver],
) -> None:
    address = await scripted(
        {"USERNAME mon": b"OK\n", "PASSWORD pw": b"OK\n", "LIST VAR ups": b"ERR ACCESS-DENIED\n"}
    )
    reading = await drivers(address, "ups", username="mon", password="pw").poll()
    assert reading.state == "fault"
    assert reading.reason == (
        f"upsd at {address} denied access (ERR ACCESS-DENIED) — check the username and "
        "password, and that upsd lets this host in"
    )


async def test_login_refused_is_a_fault(
    scripted: Callable[[dict[str, bytes]], Awaitable[str]],
    drivers: Callable[..., NutUpsDriver],
) -> None:
    address = await scripted({"USERNAME mon": b"OK\n", "PASSWORD pw": b"ERR INVALID-PASSWORD\n"})
    reading = await drivers(address, "ups", username="mon", password="pw").poll()
    assert reading.state == "fault"
    assert reading.reason is not None and "(ERR INVALID-PASSWORD)" in reading.reason


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (b"HTTP/1.0 400 Bad Request\n", "expected BEGIN LIST VAR ups"),
        (b'BEGIN LIST VAR ups\nVAR ups ups.status "OL\n', "unterminated quote"),
        (b"BEGIN LIST VAR ups\nEND LIST VAR ups\nOK\n", "more than its answer"),
    ],
)
async def test_garbage_is_a_protocol_error(
    scripted: Callable[[dict[str, bytes]], Awaitable[str]],
    drivers: Callable[..., NutUpsDriver],
    answer: bytes,
    match: str,
) -> None:
    address = await scripted({"LIST VAR ups": answer})
    with pytest.raises(NutError, match=match):
        await drivers(address, "ups").poll()


async def test_closed_without_answer_is_gone(
    scripted: Callable[[dict[str, bytes]], Awaitable[str]],
    drivers: Callable[..., NutUpsDriver],
) -> None:
    address = await scripted({})
    with pytest.raises(DeviceGone, match="closed the connection"):
        await drivers(address, "ups").poll()
