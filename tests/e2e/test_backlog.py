"""The spool backlog, end to end: a real agent process uploads to a real collector.

While the collector is down the agent's spool fills; when the collector comes
back, every report says how many events are still queued behind it, and the
collector keeps that figure in ``terminals.spool_backlog``: above zero while
the agent catches up in small batches, zero once it has.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.e2e.agents import (
    assert_conserved,
    drain,
    spool_state,
    start_agent,
    wait_for,
    write_config,
)
from tests.helpers import CollectorProc, create_token, start_collector

BATCH = 10  # events per report: small, so catching up takes many reports


def collector_view(db: Path) -> tuple[int, int | None]:
    """(events stored, the terminal's spool_backlog), read in one transaction."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        conn.execute("BEGIN")
        stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        row = conn.execute(
            "SELECT spool_backlog FROM terminals WHERE terminal_id = 'T-1'"
        ).fetchone()
        conn.execute("COMMIT")
    finally:
        conn.close()
    return int(stored), None if row is None else row[0]


def test_the_collector_sees_the_backlog_drain_to_zero(
    tmp_path: Path, collector: CollectorProc
) -> None:
    db = collector.db_path
    token = create_token(db, terminal="T-1", store="S-1")
    port = collector.url.rsplit(":", 1)[1]
    collector.stop()  # the store's line is down: nothing reaches the collector
    spool = tmp_path / "spool.db"

    # Events pile up in the spool while the collector is away.
    config = write_config(tmp_path, collector.url, token, synthetic={"rate_per_s": 400},
                          uplink={"batch_max_events": BATCH})  # fmt: skip
    loaded = start_agent(config, name="loaded")
    wait_for(lambda: spool_state(spool)["depth"] >= 100 * BATCH, what="a backlog while down",
             proc=loaded.proc, log=loaded.log)  # fmt: skip
    assert loaded.stop() == 0

    # The same agent, without the load (and no host samples to speak of), still
    # cut off; then the collector comes up.
    write_config(tmp_path, collector.url, token, uplink={"batch_max_events": BATCH},
                 host={"interval_s": 3600.0}, collector={"timeout_s": 30.0})  # fmt: skip
    agent = start_agent(config, name="catching-up")
    queued = spool_state(spool)["depth"]
    assert queued >= 100 * BATCH
    back = start_collector(db, extra_args=("--listen", f"127.0.0.1:{port}"))
    try:
        seen: list[tuple[int, int | None]] = []

        def catching_up() -> bool:
            view = collector_view(db)
            seen.append(view)
            return view[1] is not None and view[1] > 0

        wait_for(catching_up, what="a report with events still queued behind it",
                 proc=agent.proc, log=agent.log)  # fmt: skip
        stored, backlog = seen[-1]
        assert backlog is not None and backlog > 0
        # stored and queued behind: never more than the agent ever assigned
        assigned = int(spool_state(spool)["meta"]["next_seq"]) - 1
        assert stored + backlog <= assigned

        wait_for(lambda: spool_state(spool)["depth"] == 0 and collector_view(db)[1] == 0,
                 what="the backlog drained", proc=agent.proc, log=agent.log)  # fmt: skip
        assert agent.stop() == 0  # its last words (a stop event) go with backlog 0 too
        if spool_state(spool)["depth"]:  # the stop flush lost a race with its deadline
            drain(config, spool)
        stored, backlog = collector_view(db)
        assert backlog == 0
        _agent_id, rows = assert_conserved(spool, db)
        assert stored == len(rows) > queued
    finally:
        back.stop()
