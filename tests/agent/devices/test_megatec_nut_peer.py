"""NUT agrees with our Megatec driver: ``nutdrv_qx`` + ``upsd`` read the same simulator.

Two simulators run in this test's event loop, always given the same fault
commands: NUT's ``nutdrv_qx`` (``protocol = megatec``) reads the first through
its pty and a real ``upsd`` serves it on 127.0.0.1; our driver reads the
second (the exclusive lock keeps two readers off one port — which is tested
too, both ways). For each fault the test lets NUT poll the changed UPS three
times (``pollinterval = 1``, ``pollfreq = 1``: a full poll is among them), so
upsc cannot show the state before the change, then compares:

| upsc | our driver |
|---|---|
| ``OL`` / ``OB`` | no ``on_battery`` / ``on_battery`` |
| ``LB`` | ``battery_low`` |
| ``BOOST`` / ``TRIM`` / ``BYPASS`` | ``bypass_boost`` with ``regulation`` boost/trim/bypass |
| ``CAL`` | ``test_in_progress`` |
| ``FSD`` | ``shutdown_active`` |
| ups.alarm "UPS selftest failed!" (``ALARM``) | ``ups_failed`` |

plus the measurements (input.voltage, output.voltage, ups.load,
ups.beeper.status) and the ratings and identity NUT read at start.

and retries upsc until they agree. Waiting is bounded (a hang guard, not a
timing assertion): when NUT does not agree within it, the test fails showing
both sides and NUT's log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from agent.devices.base import DevicePortBusy, DeviceSpec, Reading
from agent.devices.megatec_ups import MegatecUpsDriver
from agent.sim.ups import UpsSimulator
from tests.agent.devices.nut_peer import NutServer, require_nut

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

AGREE_WITHIN_S = 30.0  # hang guard
REGULATION = ("BOOST", "TRIM", "BYPASS")
#: Q1 requests NUT must make after a change before upsc is believed: its
#: answer reaches upsd at the end of a poll, and at most every other poll is
#: a full one (ups.alarm, voltages, beeper)
FRESH_POLLS = 3


@dataclass
class Peer:
    nut: NutServer
    theirs: UpsSimulator  # read by nutdrv_qx
    ours: UpsSimulator  # read by our driver
    driver: MegatecUpsDriver

    def command(self, line: str) -> None:
        self.theirs.command(line)
        self.ours.command(line)


def make_driver(port: Path) -> MegatecUpsDriver:
    spec = DeviceSpec(name="ups", kind="megatec_ups", port=str(port), baudrate=2400, timeout_s=2)
    return MegatecUpsDriver(spec)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def peer(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Peer]:
    require_nut()
    workdir = tmp_path_factory.mktemp("nut")
    loop = asyncio.get_running_loop()
    theirs, ours = UpsSimulator(workdir / "ttyNUT"), UpsSimulator(workdir / "ttyOURS")
    for sim in (theirs, ours):
        sim._loop = loop
        sim.plug()
    nut = NutServer(workdir, {"sim": theirs.link, "ours": ours.link})
    driver = make_driver(ours.link)
    try:
        await nut.start("sim")
        yield Peer(nut, theirs, ours, driver)
    finally:
        nut.stop()
        await driver.close()
        theirs.unplug()
        ours.unplug()


def nut_flags(variables: Mapping[str, str]) -> tuple[set[str], str | None]:
    """upsc's ups.status and ups.alarm in our flags, and the regulation token."""
    tokens = variables.get("ups.status", "").split()
    flags = {"on_battery"} if "OB" in tokens else set()
    if ("OL" in tokens) == ("OB" in tokens):
        flags.add(f"neither or both of OL/OB: {tokens}")
    words = {"LB": "battery_low", "CAL": "test_in_progress", "FSD": "shutdown_active"}
    flags |= {flag for token, flag in words.items() if token in tokens}
    regulation = [t for t in tokens if t in REGULATION]
    if regulation:
        flags.add("bypass_boost")
    if "UPS selftest failed" in variables.get("ups.alarm", ""):
        flags.add("ups_failed")
    unknown = set(tokens) - {"OL", "OB", "ALARM", *words, *REGULATION}
    flags |= {f"unexpected token {t}" for t in unknown}
    return flags, (regulation[0].lower() if len(regulation) == 1 else None)


def differences(ours: Reading, theirs: Mapping[str, str]) -> list[str]:
    """Where NUT's view differs from our reading ([] when they agree)."""
    flags, regulation = nut_flags(theirs)
    found = []
    if flags != set(ours.flags):
        found.append(f"flags: NUT {sorted(flags)} vs ours {sorted(ours.flags)}")
    if regulation != ours.attributes.get("regulation"):
        found.append(f"regulation: NUT {regulation} vs ours {ours.attributes.get('regulation')}")
    numbers = {
        "input.voltage": "input_voltage",
        "output.voltage": "output_voltage",
        "ups.load": "load_pct",
    }
    for var, key in numbers.items():
        if var not in theirs or float(theirs[var]) != ours.attributes[key]:
            found.append(f"{var}: NUT {theirs.get(var)} vs ours {ours.attributes[key]}")
    beeper = "enabled" if ours.attributes["beeper"] else "disabled"
    if theirs.get("ups.beeper.status") != beeper:
        found.append(f"beeper: NUT {theirs.get('ups.beeper.status')} vs ours {beeper}")
    return found


async def until_nut_agrees(peer: Peer, ours: Reading) -> dict[str, str]:
    """upsc's variables once NUT has polled the changed UPS and agrees with ``ours``."""
    theirs: dict[str, str] = {}
    asked = peer.theirs.request_count
    try:
        async with asyncio.timeout(AGREE_WITHIN_S):
            # not the state before the change: a full poll (or three) of the new one first
            while peer.theirs.request_count < asked + FRESH_POLLS:
                await asyncio.sleep(0.05)
            while True:
                theirs = await peer.nut.variables("sim")
                if not differences(ours, theirs):
                    return theirs
                await asyncio.sleep(0.2)
    except TimeoutError:
        pytest.fail(
            f"NUT does not agree with our driver: {differences(ours, theirs)}\n"
            f"upsc: {theirs}\nnutdrv_qx log:\n{peer.nut.log('sim')}"
        )


SCENARIOS = {
    "ok": [],
    "on_battery": ["on_battery"],
    "on_battery_low": ["on_battery", "battery_low"],
    "battery_low_on_mains": ["battery_low"],
    "boost": ["bypass boost"],
    "trim": ["bypass trim"],
    "bypass": ["bypass bypass"],
    "ups_failed": ["ups_failed"],
    "test": ["test"],
    "shutdown": ["shutdown"],
    "load_and_voltage": ["load 87", "voltage 241.5"],
    "beeper_off": ["beeper off"],
    "everything": ["on_battery", "battery_low", "bypass boost", "ups_failed", "test", "shutdown"],
}


@pytest.mark.parametrize("commands", SCENARIOS.values(), ids=SCENARIOS.keys())
async def test_nut_reports_what_our_driver_reports(peer: Peer, commands: list[str]) -> None:
    peer.command("ok")
    for line in commands:
        peer.command(line)
    assert peer.theirs.state.q1() == peer.ours.state.q1()  # the same UPS, twice
    ours = await peer.driver.poll()
    await until_nut_agrees(peer, ours)


async def test_nut_reads_the_same_ratings_and_identity(peer: Peer) -> None:
    peer.command("ok")
    ours = (await peer.driver.poll()).attributes
    theirs = await until_nut_agrees(peer, await peer.driver.poll())
    assert theirs["device.mfr"] == ours["manufacturer"]
    assert theirs["device.model"] == ours["model"]
    assert theirs["ups.firmware"] == ours["firmware"]
    assert theirs["ups.type"] == "offline / line interactive" and ours["ups_type"] == "standby"
    pairs = {
        "input.voltage.nominal": "rating_voltage",
        "input.current.nominal": "rating_current_a",
        "battery.voltage.nominal": "rating_battery_voltage",
        "input.frequency.nominal": "rating_frequency_hz",
        "input.voltage.fault": "input_fault_voltage",
        "input.frequency": "frequency_hz",
        "ups.temperature": "temperature_c",
        "battery.voltage": "battery_voltage",
    }
    for var, key in pairs.items():
        assert float(theirs[var]) == ours[key], var


async def test_the_port_lock_works_both_ways(peer: Peer) -> None:
    peer.command("ok")
    # nutdrv_qx holds its port: our driver finds it busy
    intruder = make_driver(peer.theirs.link)
    with pytest.raises(DevicePortBusy, match="in use by another process"):
        await intruder.poll()
    await intruder.close()
    # our driver holds its port: a nutdrv_qx for it gives up
    await peer.driver.poll()
    second = peer.nut.spawn_driver("ours")
    try:
        async with asyncio.timeout(AGREE_WITHIN_S):
            while second.poll() is None:
                await asyncio.sleep(0.05)
    finally:
        if second.poll() is None:
            second.kill()
        second.wait(timeout=10)
    assert second.returncode != 0
    assert "is locked by another process" in peer.nut.log("ours")
    assert (await peer.driver.poll()).state == "ok"  # still ours
