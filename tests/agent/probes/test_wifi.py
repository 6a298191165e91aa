"""The /proc/net/wireless parser on crafted text, and the Wi-Fi probe on files.

The samples follow the kernel's format (two header lines, then
``%6s: %04x  %3d%c  %3d%c  %3d%c  %6d %6d %6d %6d %6d   %6d``).  This host
has no /proc/net/wireless at all, so the real "not present" path is tested
on the real file too.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.probes.base import ProbeResult, ProbeUnavailable
from agent.probes.wifi import (
    WifiProbe,
    WirelessFormatError,
    WirelessStats,
    parse_wireless,
    pick_interface,
)

HEADER = (
    "Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE\n"
    " face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22\n"
)


def line(
    name: str,
    *,
    status: int = 0,
    quality: str = "54.",
    level: str = "-56.",
    noise: str = "-256",
    counters: tuple[int, ...] = (0, 0, 0, 0, 0, 0),
) -> str:
    nwid, crypt, frag, retry, misc, beacon = counters
    return (
        f"{name:>6}: {status:04x}  {quality:>4}  {level:>4}  {noise:>4}  "
        f"{nwid:6d} {crypt:6d} {frag:6d} {retry:6d} {misc:6d}   {beacon:6d}\n"
    )


SAMPLE = (
    HEADER
    + line("wlan0", quality="54.", level="-56.", noise="-256", counters=(0, 3, 0, 17, 5, 2))
    + line("wlp2s0", status=0x0100, quality="20.", level="-88.", noise="-95.")
    + line("wlan1", quality="0", level="0", noise="0")  # listed, not associated
)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "wireless"
    path.write_text(text)
    return str(path)


# --- parse_wireless -------------------------------------------------------------------------


def test_parse_real_format_with_several_interfaces() -> None:
    stats = parse_wireless(SAMPLE)
    assert list(stats) == ["wlan0", "wlp2s0", "wlan1"]
    assert stats["wlan0"] == WirelessStats(
        interface="wlan0",
        status=0,
        link_quality=54,
        level=-56,
        noise=-256,
        quality_updated=True,
        level_updated=True,
        noise_updated=False,
        discarded_nwid=0,
        discarded_crypt=3,
        discarded_frag=0,
        discarded_retry=17,
        discarded_misc=5,
        missed_beacon=2,
    )
    assert stats["wlan0"].signal_dbm == -56
    assert stats["wlan0"].noise_dbm is None  # -256: the driver does not measure noise
    assert stats["wlp2s0"].status == 0x0100
    assert (stats["wlp2s0"].signal_dbm, stats["wlp2s0"].noise_dbm) == (-88, -95)
    assert stats["wlan1"].signal_dbm is None
    assert not stats["wlan1"].level_updated


def test_parse_a_verbatim_line() -> None:
    text = HEADER + " wlan0: 0000   70.  -39.  -256        0      0      0      0     12        0\n"
    entry = parse_wireless(text)["wlan0"]
    assert (entry.link_quality, entry.signal_dbm, entry.discarded_misc) == (70, -39, 12)


def test_relative_level_is_not_dbm() -> None:
    # a driver without dBm support prints a positive relative level
    entry = parse_wireless(HEADER + line("eth1", quality="60.", level="60.", noise="0"))["eth1"]
    assert entry.level == 60
    assert entry.signal_dbm is None


def test_headers_only_and_empty_text_have_no_interfaces() -> None:
    assert parse_wireless(HEADER) == {}
    assert parse_wireless("") == {}


@pytest.mark.parametrize(
    "bad",
    [
        "wlan0 0000 54. -56. -256 0 0 0 0 0 0\n",  # no colon
        ": 0000 54. -56. -256 0 0 0 0 0 0\n",  # no name
        "wlan0: 0000 54. -56. -256 0 0 0 0 0\n",  # a field short
        "wlan0: 00g0 54. -56. -256 0 0 0 0 0 0\n",  # status not hex
        "wlan0: 0000 5x. -56. -256 0 0 0 0 0 0\n",
        "wlan0: 0000 54. -. -256 0 0 0 0 0 0\n",
        "wlan0: 0000 54. -56.. -256 0 0 0 0 0 0\n",
        "wlan0: 0000 54. -56. -256 0 0 0 0 0 ٣\n",  # a non-ASCII digit
    ],
)
def test_malformed_lines_raise_wireless_format_error(bad: str) -> None:
    with pytest.raises(WirelessFormatError):
        parse_wireless(HEADER + bad)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_wireless_format_error(text: str) -> None:
    for candidate in (text, HEADER + text, SAMPLE + text):
        with contextlib.suppress(WirelessFormatError):
            parse_wireless(candidate)


def test_pick_prefers_an_interface_with_a_signal() -> None:
    stats = parse_wireless(HEADER + line("wlan1", level="0", quality="0") + line("wlan0"))
    picked = pick_interface(stats)
    assert picked is not None
    assert picked.interface == "wlan0"
    only_silent = parse_wireless(HEADER + line("wlan1", level="0", quality="0"))
    assert pick_interface(only_silent) == only_silent["wlan1"]
    assert pick_interface({}) is None


# --- WifiProbe ------------------------------------------------------------------------------


async def test_good_signal_is_ok(tmp_path: Path) -> None:
    result = await WifiProbe("wlan0", path=write(tmp_path, SAMPLE)).probe_once()
    assert result == ProbeResult(
        ok=True, extras={"interface": "wlan0", "link_quality": 54, "signal_dbm": -56}
    )


async def test_weak_signal_is_an_error_with_the_same_extras(tmp_path: Path) -> None:
    result = await WifiProbe("wlp2s0", path=write(tmp_path, SAMPLE)).probe_once()
    assert result == ProbeResult(
        ok=False,
        error="weak_signal",
        extras={"interface": "wlp2s0", "link_quality": 20, "signal_dbm": -88, "noise_dbm": -95},
    )


@pytest.mark.parametrize(
    ("weak_dbm", "ok"), [(-75.0, True), (-56.0, True), (-55.5, False), (-40.0, False)]
)
async def test_weak_threshold_is_strictly_below(tmp_path: Path, weak_dbm: float, ok: bool) -> None:
    probe = WifiProbe("wlan0", path=write(tmp_path, SAMPLE), weak_dbm=weak_dbm)
    result = await probe.probe_once()
    assert result.ok is ok
    assert result.error == (None if ok else "weak_signal")


async def test_listed_without_signal_is_no_signal(tmp_path: Path) -> None:
    result = await WifiProbe("wlan1", path=write(tmp_path, SAMPLE)).probe_once()
    assert result == ProbeResult(
        ok=False, error="no_signal", extras={"interface": "wlan1", "link_quality": 0}
    )


async def test_no_interface_named_takes_the_first_with_a_signal(tmp_path: Path) -> None:
    text = HEADER + line("wlan1", level="0", quality="0") + line("wlan0", level="-61.")
    result = await WifiProbe(None, path=write(tmp_path, text)).probe_once()
    assert result.ok
    assert result.extras["interface"] == "wlan0"
    assert result.extras["signal_dbm"] == -61


async def test_not_present_when_the_file_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ProbeUnavailable, match=r"^not present: .* does not exist"):
        await WifiProbe(None, path=str(tmp_path / "wireless")).probe_once()


async def test_not_present_when_only_headers(tmp_path: Path) -> None:
    with pytest.raises(ProbeUnavailable, match=r"^not present: no wireless interface"):
        await WifiProbe(None, path=write(tmp_path, HEADER)).probe_once()


async def test_not_present_when_the_named_interface_is_absent(tmp_path: Path) -> None:
    with pytest.raises(ProbeUnavailable, match=r"^not present: wlan9 is not in"):
        await WifiProbe("wlan9", path=write(tmp_path, SAMPLE)).probe_once()


async def test_unparseable_file_is_unavailable_but_not_not_present(tmp_path: Path) -> None:
    with pytest.raises(ProbeUnavailable, match=r"^cannot parse") as info:
        await WifiProbe(None, path=write(tmp_path, HEADER + "wlan0: zz\n")).probe_once()
    assert isinstance(info.value.__cause__, WirelessFormatError)


async def test_unreadable_path_is_unavailable(tmp_path: Path) -> None:
    # a directory where the file should be: reading it fails with an OSError
    with pytest.raises(ProbeUnavailable, match=r"^cannot read"):
        await WifiProbe(None, path=str(tmp_path)).probe_once()


async def test_this_hosts_real_proc_net_wireless() -> None:
    real = Path("/proc/net/wireless")
    if real.exists():
        parse_wireless(real.read_text())  # whatever this host has must parse
        return
    with pytest.raises(ProbeUnavailable, match=r"^not present: /proc/net/wireless does not exist"):
        await WifiProbe(None).probe_once()
    with pytest.raises(ProbeUnavailable, match=r"^not present"):
        await WifiProbe("wlan0").probe_once()


@pytest.mark.parametrize("bad", ["", "wl an0", "wlan0\n"])
def test_bad_interface_names_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="interface name"):
        WifiProbe(bad)


@pytest.mark.parametrize("bad", [float("nan"), float("-inf")])
def test_weak_dbm_must_be_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        WifiProbe(None, weak_dbm=bad)
