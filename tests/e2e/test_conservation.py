"""Conservation under faults: real agent and collector processes on 127.0.0.1.

Every test ends with :func:`assert_conserved`: the collector holds exactly
the seqs the agent assigned — none lost, none twice — checked by identity
(agent id, seq).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import psutil

from tests.e2e.agents import (
    assert_conserved,
    collector_rows,
    drain,
    spool_state,
    start_agent,
    wait_for,
    write_config,
)
from tests.helpers import CollectorProc, create_token, start_collector

OUTCOMES = ("approved",) * 7 + ("declined", "timeout", "error")


def restart_collector(old: CollectorProc, db: Path) -> CollectorProc:
    """The same port again, so the agent's configured URL stays right."""
    port = old.url.rsplit(":", 1)[1]
    return start_collector(db, extra_args=("--listen", f"127.0.0.1:{port}"))


def bodies(rows: list[tuple[str, int, str, str]], kind: str) -> list[dict[str, Any]]:
    return [json.loads(r[3]) for r in rows if r[2] == kind]


def test_high_rate_end_to_end_every_event_once_with_its_fields(
    tmp_path: Path, collector: CollectorProc
) -> None:
    token = create_token(collector.db_path, terminal="T-1", store="S-1")
    config = write_config(tmp_path, collector.url, token, synthetic={"rate_per_s": 800},
                          host={"interval_s": 0.05})  # fmt: skip
    agent = start_agent(config)
    spool = tmp_path / "spool.db"
    wait_for(lambda: int(spool_state(spool)["meta"]["next_seq"]) > 3000, what="3000 events",
             proc=agent.proc, log=agent.log)  # fmt: skip
    assert agent.stop() == 0
    write_config(tmp_path, collector.url, token)  # the same agent, no more load
    drain(config, spool)

    _agent_id, rows = assert_conserved(spool, collector.db_path)
    assert len(rows) > 3000
    # Fields arrive as the agent recorded them: the synthetic payments are
    # numbered, and each number says what its fields must be.
    txns = bodies(rows, "txn")
    numbers = [int(t["txn_id"].removeprefix("synthetic-")) for t in txns]
    assert sorted(numbers) == list(range(1, len(txns) + 1))
    for number, txn in zip(numbers, txns, strict=True):
        outcome = OUTCOMES[number % len(OUTCOMES)]
        assert txn["outcome"] == outcome
        assert txn["in_doubt"] is (outcome == "timeout")
        assert txn["amount_minor"] == 100 + number % 10_000 and txn["currency"] == "EUR"
    boot = psutil.boot_time()
    hosts = bodies(rows, "host_sample")
    assert len(hosts) > 10
    for sample in hosts:
        assert 0 <= sample["mem_pct"] <= 100 and sample["mem_available_bytes"] > 0
        assert abs(_epoch(sample["boot_time"]) - boot) < 2
    starts = [b for b in bodies(rows, "agent_event") if b["event"] == "start"]
    stops = [b for b in bodies(rows, "agent_event") if b["event"] == "stop"]
    assert len(starts) == 2 and len(stops) == 2
    # The collector knows which terminal and store sent them.
    db_rows = _query(collector.db_path, "SELECT DISTINCT terminal_id, store_id FROM events")
    assert db_rows == [("T-1", "S-1")]


def test_collector_killed_five_times_while_the_agent_uploads(
    tmp_path: Path, collector: CollectorProc
) -> None:
    db = collector.db_path
    token = create_token(db, terminal="T-1", store="S-1")
    config = write_config(tmp_path, collector.url, token, synthetic={"rate_per_s": 300})
    agent = start_agent(config)
    spool = tmp_path / "spool.db"
    rng = random.Random(2)
    current = collector
    uploads_seen = 0
    for _ in range(5):
        # Let uploads be under way, then kill the collector in the middle of them.
        target = len(collector_rows(db)) + rng.randint(200, 600)
        wait_for(lambda t=target: len(collector_rows(db)) >= t, what="uploads under way",
                 proc=agent.proc, log=agent.log)  # fmt: skip
        current.kill()
        wait_for(lambda: spool_state(spool)["depth"] > 100, what="backlog while down")
        current = restart_collector(current, db)
        uploads_seen += 1
    assert agent.stop() == 0
    write_config(tmp_path, current.url, token)
    drain(config, spool)
    try:
        _agent_id, rows = assert_conserved(spool, db)
    finally:
        current.stop()
    assert uploads_seen == 5 and len(rows) > 1000


def test_agent_killed_five_times_mid_upload(tmp_path: Path, collector: CollectorProc) -> None:
    token = create_token(collector.db_path, terminal="T-1", store="S-1")
    config = write_config(tmp_path, collector.url, token, synthetic={"rate_per_s": 400},
                          uplink={"batch_max_events": 50, "interval_s": 0.01})  # fmt: skip
    spool = tmp_path / "spool.db"
    rng = random.Random(5)
    for round_ in range(5):
        agent = start_agent(config, name=f"victim{round_}")
        before = len(collector_rows(collector.db_path))
        goal = before + rng.randint(100, 400)
        wait_for(lambda g=goal: len(collector_rows(collector.db_path)) >= g, what="uploads",
                 proc=agent.proc, log=agent.log)  # fmt: skip
        agent.kill()
    write_config(tmp_path, collector.url, token)
    drain(config, spool)
    _agent_id, rows = assert_conserved(spool, collector.db_path)
    unclean = [b for b in bodies(rows, "agent_event") if b["event"] == "start"]
    # Five starts after SIGKILL say so: the first start was clean (fresh spool).
    assert [b["details"]["previous_stop"] for b in unclean] == ["clean"] + ["unclean"] * 5


def test_collector_away_for_a_long_stretch_then_everything_drains(
    tmp_path: Path, collector: CollectorProc
) -> None:
    db = collector.db_path
    token = create_token(db, terminal="T-1", store="S-1")
    collector.stop()  # the store's WAN is down before the agent starts
    config = write_config(tmp_path, collector.url, token, synthetic={"rate_per_s": 500},
                          host={"interval_s": 0.02})  # fmt: skip
    agent = start_agent(config)
    spool = tmp_path / "spool.db"
    wait_for(lambda: spool_state(spool)["depth"] > 5000, what="a long backlog",
             proc=agent.proc, log=agent.log)  # fmt: skip
    backoffs = [e for e in agent.log_events() if e.get("event") == "uplink_backoff"]
    assert len(backoffs) == 1  # logged on the change of state, not on every retry
    back = restart_collector(collector, db)
    try:
        wait_for(lambda: len(collector_rows(db)) > 5000, what="backlog delivered",
                 proc=agent.proc, log=agent.log)  # fmt: skip
        assert agent.stop() == 0
        write_config(tmp_path, back.url, token)
        drain(config, spool)
        assert_conserved(spool, db)
    finally:
        back.stop()
    assert any(e.get("event") == "uplink_ok" for e in agent.log_events())


def test_spool_bound_sheds_health_first_and_reports_the_drops(
    tmp_path: Path, collector: CollectorProc
) -> None:
    db = collector.db_path
    token = create_token(db, terminal="T-1", store="S-1")
    collector.stop()
    config = write_config(
        tmp_path, collector.url, token,
        spool={"max_bytes": 256 * 1024},
        synthetic={"rate_per_s": 40},
        host={"interval_s": 0.005},
    )  # fmt: skip
    agent = start_agent(config)
    spool = tmp_path / "spool.db"
    wait_for(lambda: int(spool_state(spool)["meta"].get("dropped_host_sample", 0)) > 500,
             what="host samples dropped", proc=agent.proc, log=agent.log)  # fmt: skip
    assert agent.stop() == 0
    meta = spool_state(spool)["meta"]
    assert "dropped_txn" not in meta  # payments survive while health samples can go
    back = restart_collector(collector, db)
    try:
        write_config(tmp_path, back.url, token, spool={"max_bytes": 256 * 1024})
        drain(config, spool)
        meta = spool_state(spool)["meta"]
        rows = collector_rows(db, meta["agent_id"])
    finally:
        back.stop()
    seqs = {r[1] for r in rows}
    assert len(seqs) == len(rows)
    # Every payment the agent recorded reached the collector.
    txns = bodies(rows, "txn")
    numbers = sorted(int(t["txn_id"].removeprefix("synthetic-")) for t in txns)
    assert numbers == list(range(1, len(numbers) + 1)) and numbers
    # The drops reached the collector as agent_events whose counts add up.
    drops = [b for b in bodies(rows, "agent_event") if b["event"] == "spool_drop"]
    reported = sum(d["details"].get("dropped_host_sample", 0) for d in drops)
    assert reported == int(meta["dropped_host_sample"]) > 500
    # And what is missing from the collector is exactly what was dropped.
    assigned = int(meta["next_seq"]) - 1
    assert assigned - len(seqs) == reported


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()
