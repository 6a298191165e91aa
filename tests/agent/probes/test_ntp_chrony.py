"""The NTP probe against Debian's chronyd on a free port of 127.0.0.1.

chronyd runs with ``-x`` (it never touches the clock), no ``server`` lines
and ``local stratum 8``, so it serves the host's own clock.  chrony 4.3
answers as a synchronised stratum-8 server from its very first reply (leap
0, not 3): ``local`` makes it a reference at once, there is no
"unsynchronised" start.  Probe and server read the same clock, so the
measured offset is tiny.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.probes.ntp import probe_once
from tests.agent.probes import daemons
from tests.agent.probes.daemons import Daemon, free_udp_port, running, start_chronyd, taken_port


@pytest.fixture
def chronyd(tmp_path: Path) -> Iterator[Daemon]:
    with running(start_chronyd(tmp_path)) as daemon:
        yield daemon


async def test_chronyd_serves_our_own_clock(chronyd: Daemon) -> None:
    result = await probe_once("127.0.0.1", port=chronyd.port, timeout_s=5)
    assert result.ok, chronyd.log()
    assert result.extras["stratum"] == 8
    offset = result.extras["clock_offset_ms"]
    assert isinstance(offset, float)
    assert abs(offset) < 50
    assert result.rtt_ms is not None
    assert result.rtt_ms > 0


async def test_repeated_probes_stay_ok(chronyd: Daemon) -> None:
    # chronyd applies no rate limit unless configured to: back-to-back polls all get answers
    results = [await probe_once("127.0.0.1", port=chronyd.port, timeout_s=5) for _ in range(5)]
    assert all(result.ok for result in results), results


async def test_stopped_chronyd_is_refused(chronyd: Daemon) -> None:
    chronyd.stop()
    result = await probe_once("127.0.0.1", port=chronyd.port, timeout_s=5)
    assert not result.ok
    # on loopback the port unreachable is never rate-limited, so this is not a timeout
    assert result.error == "refused"


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def test_chronyd_binds_only_the_ntp_port_on_loopback(chronyd: Daemon) -> None:
    """No command socket (UDP 323 or /run/chrony/chronyd.sock), no other address."""
    inodes = _socket_inodes(chronyd.proc.pid)
    udp = []
    for line in Path(f"/proc/{chronyd.proc.pid}/net/udp").read_text().splitlines()[1:]:
        words = line.split()
        if words[9] in inodes:
            udp.append(words[1])
    unix_paths = []
    for line in Path(f"/proc/{chronyd.proc.pid}/net/unix").read_text().splitlines()[1:]:
        words = line.split()
        if words[6] in inodes and len(words) > 7:
            unix_paths.append(words[7])
    assert udp == [f"0100007F:{chronyd.port:04X}"]
    assert unix_paths == []


async def test_a_taken_port_is_retried_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with taken_port() as busy:
        ports = iter([busy])
        monkeypatch.setattr(daemons, "free_udp_port", lambda: next(ports, None) or free_udp_port())
        with running(start_chronyd(tmp_path)) as daemon:
            assert daemon.port != busy
            assert "Could not open NTP socket" in (tmp_path / "chronyd-0.log").read_text()
            result = await probe_once("127.0.0.1", port=daemon.port, timeout_s=5)
            assert result.ok
