"""The probe scheduler: debounce, windows, isolation of slow targets, unavailable probes.

Targets are real servers on 127.0.0.1; probes are the real probe modules
built by the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.probes import wifi
from agent.probes.base import ProbeResult
from agent.probes.registry import ProbeFn, build
from agent.probes.scheduler import Debounce, ProbeScheduler
from agent.probes.settings import ProbeSpec, ProbesSettings
from protocol import AgentEvent, Event, ProbeChange, ProbeWindow

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(i: int) -> datetime:
    return T0 + timedelta(seconds=i)


# ── debounce (pure) ─────────────────────────────────────────────────────────


def test_one_lost_attempt_is_not_an_outage() -> None:
    d = Debounce(fail_after=3, recover_after=2)
    assert d.feed(True, None, at(0)) is None
    flip = d.feed(True, None, at(1))
    assert flip is not None and (flip.state, flip.since, flip.error) == ("ok", at(0), None)
    assert d.feed(False, "timeout", at(2)) is None
    assert d.feed(False, "timeout", at(3)) is None
    assert d.feed(True, None, at(4)) is None  # two lost, then fine: still ok
    assert d.state == "ok"


def test_failure_is_dated_from_its_first_attempt() -> None:
    d = Debounce(fail_after=3, recover_after=2)
    for i in range(2):
        d.feed(True, None, at(i))
    assert d.feed(False, "timeout", at(10)) is None
    assert d.feed(False, "refused", at(11)) is None
    flip = d.feed(False, "refused", at(12))
    assert flip is not None and (flip.state, flip.since, flip.error) == ("fail", at(10), "refused")
    assert d.feed(False, "refused", at(13)) is None  # no repeat while it stays failing
    assert d.feed(True, None, at(14)) is None
    flip = d.feed(True, None, at(15))
    assert flip is not None and (flip.state, flip.since) == ("ok", at(14))


def test_a_probe_failing_from_the_start_reports_fail_first() -> None:
    d = Debounce(fail_after=2, recover_after=2)
    assert d.feed(False, "dns", at(0)) is None
    flip = d.feed(False, "dns", at(1))
    assert flip is not None and flip.state == "fail"


@given(
    fail_after=st.integers(1, 5),
    recover_after=st.integers(1, 5),
    outcomes=st.lists(st.booleans(), max_size=200),
)
def test_flips_alternate_and_follow_the_last_streak(
    fail_after: int, recover_after: int, outcomes: list[bool]
) -> None:
    d = Debounce(fail_after, recover_after)
    flips = []
    for i, ok in enumerate(outcomes):
        flip = d.feed(ok, None if ok else "timeout", at(i))
        if flip is not None:
            flips.append((i, flip))
    states = [f.state for _, f in flips]
    assert all(a != b for a, b in itertools.pairwise(states))
    for i, flip in flips:
        needed = recover_after if flip.state == "ok" else fail_after
        streak = outcomes[i - needed + 1 : i + 1]
        assert len(streak) == needed and all(o == (flip.state == "ok") for o in streak)
        start = (flip.since - T0).total_seconds()
        assert all(o == (flip.state == "ok") for o in outcomes[int(start) : i + 1])
        assert start == 0 or outcomes[int(start) - 1] != (flip.state == "ok")


# ── real targets ────────────────────────────────────────────────────────────


class Targets:
    """TCP servers on 127.0.0.1: one that answers TLS-less connects, one that
    accepts and never says a word, one that resets every connection."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []
        self.held: list[asyncio.StreamWriter] = []

    async def start(self, handler: Callable[..., object]) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def good(self) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        return await self.start(handle)

    async def silent(self) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.held.append(writer)  # accept, read nothing, answer nothing

        return await self.start(handle)

    async def resetting(self) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

        return await self.start(handle)

    async def close(self) -> None:
        for writer in self.held:
            writer.transport.abort()
        for server in self.servers:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()


@pytest.fixture
async def targets() -> AsyncIterator[Targets]:
    t = Targets()
    yield t
    await t.close()


class Recorded:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.batches: list[list[Event]] = []

    async def __call__(self, events: list[Event]) -> None:
        self.batches.append(events)
        self.events.extend(events)

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]


def spec(name: str, type_: str, port: int, **kw: object) -> ProbeSpec:
    fields: dict[str, object] = {
        "name": name,
        "type": type_,
        "target": f"127.0.0.1:{port}",
        "role": "acquirer",
        "acquirer": "acme",
        "host": "127.0.0.1",
        "port": port,
        "interval_s": 0.1,
        "timeout_s": 1.0,
    }
    fields.update(kw)
    return ProbeSpec(**fields)  # type: ignore[arg-type]


async def run_for(scheduler: ProbeScheduler, until: Callable[[], bool], limit: float = 30) -> None:
    """Run the scheduler until ``until()`` holds (a hang guard, not a timing)."""
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:
        async with asyncio.timeout(limit):
            while not until():
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task


async def test_a_hanging_and_a_resetting_target_delay_no_other_probe(targets: Targets) -> None:
    good, silent, resetting = (
        await targets.good(),
        await targets.silent(),
        await targets.resetting(),
    )
    specs = (
        spec("good", "tcp", good),
        # A TLS handshake with a server that never answers hangs until the
        # timeout, which is longer than three windows.
        spec("hang", "tls", silent, timeout_s=3.5, interval_s=0.1),
        spec("reset", "tls", resetting),
    )
    settings = ProbesSettings(window_s=1.0, fail_after=2, probes=specs)
    rec = Recorded()
    scheduler = ProbeScheduler(settings, rec, builder=build)
    hang_windows = lambda: [  # noqa: E731
        e
        for e in rec.of(ProbeWindow)
        if isinstance(e, ProbeWindow) and e.target.endswith(str(silent))
    ]

    def windows() -> list[list[Event]]:
        return [b for b in rec.batches if all(isinstance(e, ProbeWindow) for e in b)]

    await run_for(scheduler, lambda: len(hang_windows()) >= 1 and len(windows()) >= 5)
    windows_seen = windows()
    for batch in windows_seen:
        names = {e.target for e in batch if isinstance(e, ProbeWindow)}
        # the good and the resetting probe finished attempts in every window
        assert f"127.0.0.1:{good}" in names and f"127.0.0.1:{resetting}" in names
    by_target: dict[str, list[ProbeWindow]] = {}
    for e in rec.of(ProbeWindow):
        assert isinstance(e, ProbeWindow)
        by_target.setdefault(e.target, []).append(e)
    # the hanging probe finished in far fewer windows than the others
    assert len(by_target[f"127.0.0.1:{silent}"]) < len(windows_seen)
    good_w = by_target[f"127.0.0.1:{good}"]
    assert all(w.ok == w.sent and w.loss_pct == 0 and w.role == "acquirer" for w in good_w)
    assert all(w.acquirer == "acme" and w.probe == "tcp" for w in good_w)
    reset_w = by_target[f"127.0.0.1:{resetting}"]
    assert all(w.ok == 0 and set(w.errors) <= {"reset", "tls_handshake_failed"} for w in reset_w)
    assert by_target[f"127.0.0.1:{silent}"][0].errors == {"timeout": 1}

    changes = {(c.target, c.state) for c in rec.of(ProbeChange) if isinstance(c, ProbeChange)}
    assert (f"127.0.0.1:{good}", "ok") in changes
    assert (f"127.0.0.1:{resetting}", "fail") in changes
    status = {p["name"]: p for p in scheduler.status_json()}
    assert status["good"]["state"] == "ok" and status["reset"]["state"] == "fail"


async def test_probe_change_when_a_target_goes_away_and_comes_back(targets: Targets) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = ProbesSettings(
        window_s=60, fail_after=3, recover_after=2, probes=(spec("t", "tcp", port),)
    )
    rec = Recorded()
    scheduler = ProbeScheduler(settings, rec)

    def states() -> list[str]:
        return [c.state for c in rec.of(ProbeChange) if isinstance(c, ProbeChange)]

    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:
        async with asyncio.timeout(30):
            while states() != ["ok"]:
                await asyncio.sleep(0.02)
            server.close()
            await server.wait_closed()
            while states() != ["ok", "fail"]:
                await asyncio.sleep(0.02)
            server = await asyncio.start_server(handle, "127.0.0.1", port)
            while states() != ["ok", "fail", "ok"]:
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
        server.close()
    fail = [c for c in rec.of(ProbeChange) if isinstance(c, ProbeChange)][1]
    assert (fail.error, fail.role, fail.probe, fail.acquirer) == (
        "refused",
        "acquirer",
        "tcp",
        "acme",
    )
    # no windows yet (60 s): closing them now gives one with every attempt
    await scheduler.close_windows(60)
    (window,) = rec.of(ProbeWindow)
    assert isinstance(window, ProbeWindow)
    assert (
        window.sent >= 7
        and window.errors["refused"] >= 3
        and window.ok == window.sent - window.errors["refused"]
    )


async def test_an_unavailable_probe_says_why_once_and_sends_no_windows(tmp_path: Path) -> None:
    absent = tmp_path / "wireless"  # no such file: no Wi-Fi hardware

    def builder(s: ProbeSpec) -> ProbeFn:
        return wifi.WifiProbe(None, path=str(absent)).probe_once

    wifi_spec = ProbeSpec(name="wifi", type="wifi", target="auto", role="link", interval_s=0.05)
    settings = ProbesSettings(window_s=0.2, probes=(wifi_spec,))
    rec = Recorded()
    scheduler = ProbeScheduler(settings, rec, builder=builder)
    await run_for(scheduler, lambda: scheduler.runners[0].unavailable is not None)
    await asyncio.sleep(0.5)  # several windows: still no window events, no repeated event
    await scheduler.close_windows(0.2)
    (event,) = rec.events
    assert isinstance(event, AgentEvent) and event.event == "probe_unavailable"
    assert event.details["probe"] == "wifi" and "not present" in str(event.details["reason"])
    (status,) = scheduler.status_json()
    assert status["state"] == "unavailable" and "not present" in status["reason"]


async def test_a_crashing_probe_is_a_failed_attempt_not_a_dead_agent() -> None:
    calls = 0

    async def broken() -> ProbeResult:
        nonlocal calls
        calls += 1
        raise RuntimeError("bug")

    s = ProbeSpec(name="b", type="tcp", target="x:1", role="isp", interval_s=0.05)
    rec = Recorded()
    scheduler = ProbeScheduler(
        ProbesSettings(probes=(s,), fail_after=2), rec, builder=lambda _: broken
    )
    await run_for(scheduler, lambda: calls >= 3)
    await scheduler.close_windows(1)
    window = rec.of(ProbeWindow)[-1]
    assert isinstance(window, ProbeWindow) and window.errors["probe_error"] >= 3
    (change,) = rec.of(ProbeChange)
    assert isinstance(change, ProbeChange) and change.error == "probe_error"
