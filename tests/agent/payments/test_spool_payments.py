"""The spool's part of the payments: the schema step to v2, and one transaction for
events, payment rows, counters and a checkpoint — also across SIGKILL."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.spool import SCHEMA_VERSION, PaymentRow, Spool
from protocol import Event, Txn
from tests.agent.payments.kill_writer import KEY, is_duplicate

ROOT = Path(__file__).resolve().parents[3]

V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, priority INTEGER NOT NULL,
    created_at REAL NOT NULL, body BLOB NOT NULL);
CREATE INDEX events_priority ON events (priority, seq);
CREATE INDEX events_created ON events (created_at);
CREATE TABLE quarantine (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, body BLOB NOT NULL,
    status INTEGER NOT NULL, reason TEXT NOT NULL, quarantined_at REAL NOT NULL);
INSERT INTO meta VALUES ('agent_id', 'abc'), ('next_seq', '2');
INSERT INTO events VALUES (1, 'txn', 2, 0, CAST('{"kept": true}' AS BLOB));
PRAGMA user_version = 1;
"""


def open_spool(path: Path) -> Spool:
    spool = Spool(path, max_bytes=64 << 20, max_age_s=86400)
    spool.open()
    return spool


def txn(n: int) -> Txn:
    return Txn(seq=0, ts=datetime.now(UTC), txn_id=f"t{n}", outcome="approved")


def row(txn_id: str, state: str = "open") -> PaymentRow:
    return PaymentRow(txn_id, state, 1.0, 2.0, b"{}")


def test_a_v1_spool_is_taken_to_v2_keeping_everything(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
    spool = open_spool(path)
    assert spool.agent_id == "abc"
    assert spool.peek(10, 1 << 20).bodies == (b'{"kept": true}',)
    assert spool.append([txn(1)]) == (2,)
    spool.append_with([], payments=[row("t1")])
    assert [r.txn_id for r in spool.payment_rows()] == ["t1"]
    spool.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2


def test_append_with_writes_everything_or_nothing(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "spool.db")
    # nothing but a checkpoint: still committed
    assert spool.append_with([], meta={"logtail:/a": "1:10"}) == ()
    assert spool.get_meta("logtail:/a") == "1:10"
    seqs = spool.append_with(
        [txn(1), txn(2)],
        meta={"logtail:/a": "1:20"},
        bump={"payments.count.approved": 2},
        payments=[row("t1"), row("t2")],
    )
    assert seqs == (1, 2)
    spool.append_with([], bump={"payments.count.approved": 1}, forget=["t1"])
    assert spool.meta_items("payments.count.") == {"payments.count.approved": "3"}
    assert [r.txn_id for r in spool.payment_rows()] == ["t2"]

    class Broken(Event):
        KIND = "broken"

        @property
        def priority(self) -> int:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        spool.append_with(
            [txn(3), Broken(seq=0, ts=datetime.now(UTC))],
            meta={"logtail:/a": "1:30"},
            bump={"payments.count.approved": 1},
            payments=[row("t3")],
            forget=["t2"],
        )
    assert spool.get_meta("logtail:/a") == "1:20"
    assert spool.meta_items("payments.count.") == {"payments.count.approved": "3"}
    assert [r.txn_id for r in spool.payment_rows()] == ["t2"]
    assert spool.depth() == 2 and spool.append([txn(4)]) == (3,)


def test_pruning_forgets_only_old_rows_of_a_state(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "spool.db")
    spool.append_with(
        [],
        payments=[
            PaymentRow("old", "closed", 1.0, 10.0, b"{}"),
            PaymentRow("new", "closed", 1.0, 99.0, b"{}"),
            PaymentRow("doubt", "in_doubt", 1.0, 10.0, b"{}"),
        ],
    )
    assert spool.prune_payments(state="closed", updated_before=50.0) == 1
    assert sorted(r.txn_id for r in spool.payment_rows()) == ["doubt", "new"]


def test_sigkill_leaves_the_checkpoint_and_the_payments_in_agreement(tmp_path: Path) -> None:
    """Killed at random moments while reporting as fast as it can, and started again
    each time from its checkpoint (as the log tailer is): the checkpoint says report
    k was the last stored, and exactly the payments of reports ≤ k are there, each
    once — nothing repeated, nothing skipped."""
    path = tmp_path / "spool.db"
    rng = random.Random(5)
    last = -1
    for _ in range(6):
        with subprocess.Popen(
            [sys.executable, "-m", "tests.agent.payments.kill_writer", str(path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        ) as proc:
            try:
                assert proc.stdout is not None
                assert proc.stdout.readline().strip() == "ready"
                time.sleep(rng.uniform(0.0, 0.3))
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        k, rows, events = _read(path)
        assert k >= last + 200  # it got going each time
        last = k
        expected = {f"p{i}" for i in range(k + 1) if not is_duplicate(i)}
        assert rows == expected
        assert sorted(events) == sorted(expected)  # each payment's event once


def _read(path: Path) -> tuple[int, set[str], list[str]]:
    db = sqlite3.connect(path)
    try:
        k = int(db.execute("SELECT value FROM meta WHERE key = ?", (KEY,)).fetchone()[0])
        rows = {t for (t,) in db.execute("SELECT txn_id FROM payments")}
        events = [
            t
            for (t,) in db.execute(
                "SELECT json_extract(body, '$.txn_id') FROM events WHERE kind = 'txn'"
            )
        ]
    finally:
        db.close()
    return k, rows, events
