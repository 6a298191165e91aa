"""Every drop is reported exactly once, even when the agent stopped before reporting it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from agent.spool import Spool
from protocol import AgentEvent, Event
from tests.agent.test_spool import host, open_spool


def report(unreported: dict[str, int]) -> Event:
    details = {f"dropped_{kind}": n for kind, n in unreported.items()}
    return AgentEvent(seq=0, ts=datetime.now(UTC), event="spool_drop", details=details)


def reported_in_events(spool: Spool) -> int:
    batch = spool.peek(1_000_000, 1 << 40)
    total = 0
    for body in batch.bodies:
        event = json.loads(body)
        if event["kind"] == "agent_event" and event["event"] == "spool_drop":
            total += event["details"].get("dropped_host_sample", 0)
    return total


def overfill(spool: Spool, start: int) -> int:
    spool.append([host(n) for n in range(start, start + 200)])
    drops = spool.enforce_bounds()
    return sum(d.by_kind.get("host_sample", 0) for d in drops)


def test_a_drop_whose_report_was_lost_is_reported_on_the_next_call(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = open_spool(path, max_bytes=40_000, max_age_s=3600)
    first = overfill(spool, 0)
    assert first > 0
    spool.close()  # the agent stopped between the drop and its report

    spool = open_spool(path, max_bytes=40_000, max_age_s=3600)
    assert spool.report_drops(report) == {"host_sample": first}
    assert spool.report_drops(report) == {}  # reported once
    second = overfill(spool, 1000)
    assert spool.report_drops(report) == {"host_sample": second}
    # the reports are state events: health samples are shed before them
    assert reported_in_events(spool) == first + second
    spool.close()
