"""Timeline and pagination on a real collector: every row once, in order, under inserts.

A terminal posts events over HTTP (several share a timestamp, so the cursor's
tie-breaker matters); payments are written into the SQLite file directly, many
with the same ``ts``. Walks are compared with the database's own ordering,
so rows a running correlator adds are expected too.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import protocol
from protocol import AgentEvent, AgentInfo, DeviceStatus, Event, ProbeChange, Report, Txn
from tests.collector.api.conftest import get, ok, walk
from tests.collector.viewdata import iso
from tests.collector.wire import post_report, rows
from tests.helpers import create_token, start_collector

TERMINAL, STORE, AGENT = "T-TL", "S-TL", "agent-TL"


@dataclass
class Site:
    url: str
    db: Path
    viewer: str
    now: datetime


def _event(seq: int, now: datetime) -> Event:
    ts = now - timedelta(minutes=60 - seq // 3)  # three events per timestamp
    match seq % 4:
        case 0:
            return ProbeChange(
                seq=seq, ts=ts, probe="icmp", target="192.168.1.1", role="gateway",
                state="fail" if seq % 8 == 0 else "ok", error="timeout" if seq % 8 == 0 else None,
            )  # fmt: skip
        case 1:
            return DeviceStatus(
                seq=seq, ts=ts, device="receipt", device_kind="escpos", state="fault",
                flags=("paper_end",),
            )  # fmt: skip
        case 2:
            return Txn(seq=seq, ts=ts, txn_id=f"T{seq}", outcome="timeout", in_doubt=True)
        case _:
            return AgentEvent(seq=seq, ts=ts, event="start")


def _txn_row(terminal: str, txn_id: str, ts: str, *, failed: bool) -> tuple[Any, ...]:
    return (
        terminal, txn_id, STORE, AGENT, 1, ts, None, "sale", "ACQ", "error" if failed else
        "approved", None, 0, 0, 0, None, 100, "EUR", 800.0, int(failed), None,
        "unknown" if failed else None, 0.2 if failed else None, "[]" if failed else None,
        "Check it." if failed else None, ts if failed else None, None,
    )  # fmt: skip


def insert_txns(db: Path, txns: list[tuple[Any, ...]]) -> None:
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO txns VALUES (" + ", ".join("?" * 26) + ")", txns)
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    collector = start_collector(tmp_path_factory.mktemp("pages") / "collector.db")
    try:
        now = datetime.now(UTC)
        token = create_token(collector.db_path, terminal=TERMINAL, store=STORE)
        agent = AgentInfo(id=AGENT, terminal_id=TERMINAL, store_id=STORE, version="0.1.0")
        for first in (1, 21):  # two reports
            events = tuple(_event(s, now) for s in range(first, first + 20))
            report = Report(agent=agent, sent_at=now, events=events)
            reply = post_report(collector.url, protocol.encode_report(report), token)
            assert reply.status == 200, reply.body
        # 120 payments on ten timestamps, on two terminals of the store
        base = now - timedelta(hours=2)
        insert_txns(
            collector.db_path,
            [
                _txn_row(
                    term, f"p{i:03d}", iso(base + timedelta(minutes=i % 10)), failed=i % 3 != 0
                )
                for i in range(120)
                for term in (("T-TL",) if i % 2 else ("T-TL2",))
            ],
        )
        viewer = create_token(collector.db_path, viewer="pages")
        _settle(collector.url, viewer)
        yield Site(collector.url, collector.db_path, viewer, now)
    finally:
        collector.stop()


def _settle(url: str, viewer: str) -> None:
    """Wait until a running correlator has read every event (it adds payments from them)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = ok(url, viewer, "fleet")["correlator"]
        if not status["available"] or (status.get("idle") and not status.get("pending_events")):
            return
        time.sleep(0.1)
    raise AssertionError(f"the correlator did not catch up: {status}")


def _db_timeline(site: Site) -> list[str]:
    return [
        f"{a}:{s}"
        for a, s in rows(
            site.db,
            "SELECT agent_id, seq FROM events WHERE terminal_id = ? ORDER BY ts DESC, rowid DESC",
            (TERMINAL,),
        )
    ]


def _db_txns(site: Site, where: str = "1") -> list[tuple[str, str]]:
    return [
        (t, x)
        for t, x in rows(
            site.db,
            f"SELECT terminal_id, txn_id FROM txns WHERE {where}"
            " ORDER BY ts DESC, terminal_id DESC, txn_id DESC",
        )
    ]


def test_timeline_summaries_in_plain_words(site: Site) -> None:
    items = ok(site.url, site.viewer, f"terminals/{TERMINAL}/timeline", limit=1000)["items"]
    by_id = {i["event_id"]: i for i in items}
    assert by_id[f"{AGENT}:8"]["summary"] == "probe gateway icmp 192.168.1.1: fail (timeout)"
    assert by_id[f"{AGENT}:4"]["summary"] == "probe gateway icmp 192.168.1.1: ok"
    assert by_id[f"{AGENT}:5"]["summary"] == "device receipt: fault [paper_end]"
    assert by_id[f"{AGENT}:6"]["summary"] == "payment T6: timeout, in doubt"
    assert by_id[f"{AGENT}:7"]["summary"] == "agent: start"
    assert by_id[f"{AGENT}:6"]["event"]["txn_id"] == "T6"
    assert by_id[f"{AGENT}:6"]["kind"] == "txn"
    assert len(items) == 40


def test_timeline_pages_follow_the_database_order(site: Site) -> None:
    pages = walk(site.url, site.viewer, f"terminals/{TERMINAL}/timeline", limit=3)
    assert all(len(p) == 3 for p in pages[:-1])
    assert [i["event_id"] for p in pages for i in p] == _db_timeline(site)
    stamps = [i["ts"] for p in pages for i in p]
    assert stamps == sorted(stamps, reverse=True)


def test_timeline_kind_and_time_filters(site: Site) -> None:
    path = f"terminals/{TERMINAL}/timeline"
    txns = [i for p in walk(site.url, site.viewer, path, kind="txn", limit=4) for i in p]
    assert [i["event_id"] for i in txns] == [
        e for e in _db_timeline(site) if int(e.split(":")[1]) % 4 == 2
    ]
    since = iso(site.now - timedelta(minutes=55))
    until = iso(site.now - timedelta(minutes=52))
    window = ok(site.url, site.viewer, path, since=since, until=until)["items"]
    assert window and all(since <= i["ts"] <= until for i in window)
    # 55..52 minutes ago: seqs 15..26 (three per minute)
    assert sorted(int(i["event_id"].split(":")[1]) for i in window) == list(range(15, 27))


def test_transactions_walk_has_no_gaps_or_repeats(site: Site) -> None:
    expected = _db_txns(site)
    assert len(expected) >= 120
    pages = walk(site.url, site.viewer, "transactions", limit=7)
    assert [(t["terminal_id"], t["txn_id"]) for p in pages for t in p] == expected
    failed = walk(site.url, site.viewer, "transactions", limit=9, failed="true", store=STORE)
    assert [(t["terminal_id"], t["txn_id"]) for p in failed for t in p] == _db_txns(
        site, f"failed = 1 AND store_id = '{STORE}'"
    )


def test_pages_stay_stable_while_payments_arrive(site: Site) -> None:
    """Newer payments arriving mid-walk neither shift nor repeat the pages still to come."""
    params = {"terminal": "T-TL2", "limit": 10}
    before = _db_txns(site, "terminal_id = 'T-TL2'")
    first = ok(site.url, site.viewer, "transactions", **params)
    newer = iso(datetime.now(UTC))
    insert_txns(site.db, [_txn_row("T-TL2", f"new{i}", newer, failed=True) for i in range(15)])
    seen = [(t["terminal_id"], t["txn_id"]) for t in first["items"]]
    cursor = first["next_cursor"]
    while cursor is not None:
        page = ok(site.url, site.viewer, "transactions", cursor=cursor, **params)
        seen += [(t["terminal_id"], t["txn_id"]) for t in page["items"]]
        cursor = page["next_cursor"]
    assert seen == before
    # a fresh walk sees the new ones first
    fresh = ok(site.url, site.viewer, "transactions", **params)["items"]
    assert [t["txn_id"][:3] for t in fresh] == ["new"] * 10


def test_a_cursor_belongs_to_its_list(site: Site) -> None:
    page = ok(site.url, site.viewer, "transactions", limit=1)
    reply = ok_or_error(site, "incidents", cursor=page["next_cursor"])
    assert reply == (400, "cursor")
    reply = ok_or_error(site, f"terminals/{TERMINAL}/timeline", cursor=page["next_cursor"])
    assert reply == (400, "cursor")


def ok_or_error(site: Site, path: str, **params: Any) -> tuple[int, str | None]:
    reply = get(site.url, site.viewer, path, **params)
    return reply.status, reply.json().get("field") if reply.status != 200 else None
