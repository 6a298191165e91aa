"""The uplink against a real HTTP server on loopback that answers as scripted.

The real collector is exercised end to end in tests/e2e; here a scripted
server lets each answer of DESIGN.md's table (200, 400, 401, 403, 413, 429,
5xx, no server at all) be produced on demand.
"""

from __future__ import annotations

import json
import random
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from agent.config import CollectorLinkSettings, UplinkSettings
from agent.spool import Spool
from agent.uplink import Backoff, Outcome, Uplink
from protocol import AgentInfo, HostSample, Txn, decode_report

T = TypeVar("T")
TOKEN = "secret-token"


@dataclass
class Scripted:
    """A collector stand-in: ``answer(report) -> (status, body)`` decides each reply."""

    answer: Callable[[Any], tuple[int, dict[str, Any]]]
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp has already undone Content-Encoding: gzip
        headers = dict(request.headers)
        report = decode_report(body)
        self.requests.append({"headers": headers, "report": report})
        status, payload = self.answer(report)
        extra = {"Retry-After": "7"} if status == 429 else {}
        return web.json_response(payload, status=status, headers=extra)


def ack_all(report: Any) -> tuple[int, dict[str, Any]]:
    return 200, {"acked": [e.seq for e in report.events], "stored": len(report.events)}


@pytest.fixture
async def server() -> AsyncIterator[tuple[Scripted, str]]:
    scripted = Scripted(ack_all)
    app = web.Application()
    app.router.add_post("/api/v1/reports", scripted.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield scripted, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    s = Spool(tmp_path / "spool.db", max_bytes=1 << 26, max_age_s=86400)
    s.open()
    return s


def make_uplink(spool: Spool, url: str, **overrides: Any) -> Uplink:
    settings = UplinkSettings(
        **{
            "interval_s": 0.05,
            "batch_max_events": 50,
            "batch_max_bytes": 1 << 20,
            "backoff_initial_s": 1.0,
            "backoff_max_s": 30.0,
            **overrides,
        }
    )
    link = CollectorLinkSettings(url=url, token=TOKEN, timeout_s=5.0)
    agent = AgentInfo(id=spool.agent_id, terminal_id="T-1", store_id="S-1", version="test")

    async def call(fn: Callable[[Spool], T]) -> T:
        return fn(spool)

    return Uplink(link, settings, agent, call)


def host(n: int) -> HostSample:
    now = datetime.now(UTC)
    return HostSample(
        seq=0, ts=now, cpu_pct=float(n % 100), mem_pct=1.0, mem_available_bytes=1,
        disk_pct=1.0, disk_free_bytes=1, load1=0.0, load5=0.0, load15=0.0, uptime_s=1.0,
        boot_time=now,
    )  # fmt: skip


async def drain(uplink: Uplink, rounds: int = 100) -> list[Outcome | None]:
    outcomes: list[Outcome | None] = []
    async with uplink.connected():
        for _ in range(rounds):
            outcome = await uplink.send_once()
            outcomes.append(outcome)
            if outcome is None or outcome.wait_s > 0:
                break
    return outcomes


async def test_sends_gzip_batches_with_token_and_deletes_what_was_acked(
    server: tuple[Scripted, str], spool: Spool
) -> None:
    scripted, url = server
    spool.append([host(i) for i in range(120)])
    uplink = make_uplink(spool, url)
    outcomes = await drain(uplink)
    assert outcomes[-1] is None and spool.depth() == 0
    sizes = [len(r["report"].events) for r in scripted.requests]
    assert sizes == [50, 50, 20]  # bounded by batch_max_events
    first = scripted.requests[0]
    assert first["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert first["headers"]["Content-Encoding"] == "gzip"
    assert first["report"].agent.id == spool.agent_id
    sent = [e.seq for r in scripted.requests for e in r["report"].events]
    assert sent == list(range(1, 121))
    assert uplink.status.state == "ok" and uplink.status.uploaded_events == 120


async def test_each_report_says_how_many_events_stay_queued_behind_it(
    server: tuple[Scripted, str], spool: Spool
) -> None:
    scripted, url = server
    spool.append([host(i) for i in range(120)])
    await drain(make_uplink(spool, url))
    assert [r["report"].backlog for r in scripted.requests] == [70, 20, 0]


async def test_backlog_counts_what_the_collector_kept_back_and_a_smaller_batch(
    server: tuple[Scripted, str], spool: Spool
) -> None:
    scripted, url = server
    answers = iter(
        [
            (413, {"error": "too large"}),  # the batch halves: 15 sent, 15 behind
            (200, {"acked": list(range(1, 11))}),  # 5 of those 15 not acknowledged
        ]
    )
    scripted.answer = lambda report: next(answers, None) or ack_all(report)
    spool.append([host(i) for i in range(30)])
    uplink = make_uplink(spool, url)
    await drain(uplink)  # stops at the partial acknowledgement (it backs off)
    await drain(uplink)
    backlogs = [(len(r["report"].events), r["report"].backlog) for r in scripted.requests]
    # the 5 kept back go again, at the head of the queue
    assert backlogs == [(30, 0), (15, 15), (15, 5), (5, 0)]
    assert spool.depth() == 0


async def test_batches_are_bounded_in_bytes(server: tuple[Scripted, str], spool: Spool) -> None:
    scripted, url = server
    spool.append([host(i) for i in range(30)])
    size = spool.peek(1, 1 << 20).size
    await drain(make_uplink(spool, url, batch_max_bytes=size * 4 + 10))
    assert {len(r["report"].events) for r in scripted.requests} <= {4, 2}
    assert spool.depth() == 0


async def test_only_acknowledged_seqs_are_deleted(
    server: tuple[Scripted, str], spool: Spool
) -> None:
    scripted, url = server
    scripted.answer = lambda r: (200, {"acked": [e.seq for e in r.events if e.seq % 2]})
    spool.append([host(i) for i in range(6)])
    outcomes = await drain(make_uplink(spool, url))
    assert outcomes[-1] is not None and outcomes[-1].wait_s >= 0  # backs off, no spin
    left = list(spool.peek(100, 1 << 20).seqs)
    assert left == [2, 4, 6]


async def test_413_halves_the_batch_until_it_fits(
    server: tuple[Scripted, str], spool: Spool
) -> None:
    scripted, url = server

    def limit(report: Any) -> tuple[int, dict[str, Any]]:
        if len(report.events) > 12:
            return 413, {"error": "too many events"}
        return ack_all(report)

    scripted.answer = limit
    spool.append([host(i) for i in range(40)])
    await drain(make_uplink(spool, url, batch_max_events=50))
    assert spool.depth() == 0 and spool.stats().quarantined == 0
    sizes = [len(r["report"].events) for r in scripted.requests]
    assert sizes[:3] == [40, 20, 10]  # halved twice, then accepted
    delivered = sorted(e.seq for r in scripted.requests[2:] for e in r["report"].events)
    assert delivered == list(range(1, 41))


async def test_a_single_event_too_large_is_quarantined(
    server: tuple[Scripted, str], spool: Spool
) -> None:
    scripted, url = server
    scripted.answer = lambda r: (413, {"error": "body too large"})
    spool.append([host(1)])
    await drain(make_uplink(spool, url))
    assert spool.depth() == 0 and spool.stats().quarantined == 1


async def test_400_naming_one_event_quarantines_just_that_event(
    server: tuple[Scripted, str], spool: Spool
) -> None:
    scripted, url = server

    def refuse_third(report: Any) -> tuple[int, dict[str, Any]]:
        for i, event in enumerate(report.events):
            if event.seq == 3:
                return 400, {"error": "bad", "field": f"events[{i}].cpu_pct"}
        return ack_all(report)

    scripted.answer = refuse_third
    spool.append([host(i) for i in range(5)])
    uplink = make_uplink(spool, url)
    await drain(uplink)
    assert spool.depth() == 0
    assert spool.stats().quarantined == 1 and uplink.status.quarantined_events == 1
    assert "events[2].cpu_pct" in (uplink.status.last_error or "")


async def test_400_on_the_envelope_quarantines_the_batch(
    server: tuple[Scripted, str], spool: Spool
) -> None:
    scripted, url = server
    scripted.answer = lambda r: (400, {"error": "bad agent", "field": "agent.id"})
    spool.append([host(i) for i in range(5)])
    await drain(make_uplink(spool, url))
    assert spool.depth() == 0 and spool.stats().quarantined == 5


@pytest.mark.parametrize("status", [401, 403])
async def test_401_and_403_stop_uploads_and_keep_everything(
    server: tuple[Scripted, str], spool: Spool, status: int
) -> None:
    scripted, url = server
    scripted.answer = lambda r: (status, {"error": "unknown token"})
    spool.append([host(i) for i in range(5)])
    uplink = make_uplink(spool, url, backoff_max_s=45.0)
    outcomes = await drain(uplink)
    assert outcomes == [Outcome(wait_s=45.0)]
    assert uplink.status.state == "unauthorized"
    assert spool.depth() == 5 and spool.stats().quarantined == 0


@pytest.mark.parametrize("status", [500, 502, 503, 404])
async def test_server_errors_back_off_and_keep_everything(
    server: tuple[Scripted, str], spool: Spool, status: int
) -> None:
    scripted, url = server
    scripted.answer = lambda r: (status, {"error": "down"})
    spool.append([host(i) for i in range(5)])
    uplink = make_uplink(spool, url, backoff_initial_s=2.0)
    waits = []
    async with uplink.connected():
        for _ in range(4):
            outcome = await uplink.send_once()
            assert outcome is not None
            waits.append(outcome.wait_s)
    ceilings = [2.0, 4.0, 8.0, 16.0]
    assert all(0 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    assert uplink.status.state == "backoff" and uplink.status.consecutive_failures == 4
    assert spool.depth() == 5


async def test_429_honours_retry_after(server: tuple[Scripted, str], spool: Spool) -> None:
    scripted, url = server
    scripted.answer = lambda r: (429, {"error": "slow down"})
    spool.append([host(1)])
    assert await drain(make_uplink(spool, url)) == [Outcome(wait_s=7.0)]
    assert spool.depth() == 1


async def test_no_collector_at_all_backs_off(spool: Spool) -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        spool.append([host(1)])
        uplink = make_uplink(spool, url)
        outcomes = await drain(uplink)
    assert len(outcomes) == 1 and outcomes[0] is not None and outcomes[0].wait_s <= 1.0
    assert "unreachable" in (uplink.status.last_error or "")
    assert spool.depth() == 1


async def test_payments_and_health_travel_in_seq_order(
    server: tuple[Scripted, str], spool: Spool
) -> None:
    scripted, url = server
    spool.append([host(1), Txn(seq=0, ts=datetime.now(UTC), txn_id="x", outcome="error")])
    await drain(make_uplink(spool, url))
    kinds = [e.kind for e in scripted.requests[0]["report"].events]
    assert kinds == ["host_sample", "txn"]


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    backoff = Backoff(1.0, 60.0, rng=random.Random(7))
    ceilings = [min(60.0, 2.0**n) for n in range(12)]
    samples = [
        [backoff.next_delay() for _ in range(12)] for _ in range(1) for _ in [backoff.reset()]
    ]
    for delay, ceiling in zip(samples[0], ceilings, strict=True):
        assert 0.0 <= delay <= ceiling
    # Full jitter: over many draws at the cap, delays spread over the whole range.
    capped = Backoff(1.0, 60.0, rng=random.Random(1))
    capped.attempt = 50
    draws = [capped.next_delay() for _ in range(2000)]
    assert max(draws) <= 60.0
    assert min(draws) < 6.0 and max(draws) > 54.0
    assert 25.0 < sum(draws) / len(draws) < 35.0


def test_report_body_decodes_with_the_protocol(spool: Spool) -> None:
    """The uplink's raw envelope is what the collector's decoder reads."""
    spool.append([host(1), host(2)])
    batch = spool.peek(10, 1 << 20)
    from protocol import encode_report_raw

    agent = AgentInfo(id=spool.agent_id, terminal_id="T", store_id="S", version="v")
    report = decode_report(encode_report_raw(agent, datetime.now(UTC), batch.bodies))
    assert [e.seq for e in report.events] == [1, 2]
    assert json.loads(encode_report_raw(agent, datetime.now(UTC), []))["events"] == []
