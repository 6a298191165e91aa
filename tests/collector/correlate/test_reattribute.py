"""``posmon-collector reattribute`` as a real command, next to a running collector."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from tests.collector.correlate.servicekit import (
    Terminal,
    incidents,
    now_s,
    txn,
    txn_row,
    wait_caught_up,
    window,
)
from tests.helpers import run_collector_cli, start_collector

MIN = timedelta(minutes=1)


def test_reattribute_revises_past_the_horizon_while_the_server_runs(tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text("[attribution]\nrevise_horizon_s = 600\nfleet_window_s = 60\n")
    db = tmp_path / "collector.db"
    proc = start_collector(db, ["--config", str(config)])
    try:
        t = now_s() - timedelta(minutes=45)
        term = Terminal(proc, "T-1", "S-1")
        term.post(txn(t, "a", "timeout"), txn(t + 20 * MIN, "b", "error", in_doubt=False))
        # the ISP evidence arrives late, past the 10-minute horizon of payment "a"
        term.post(*[window(t + k * MIN, "isp", "9.9.9.9", fail=True) for k in (-1, 0, 1)])
        wait_caught_up(db)
        assert txn_row(db, "T-1", "a")["cause"] == "unknown"

        done = run_collector_cli("reattribute", "--config", str(config), "--db", str(db),
                                 "--since", "1h")  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].startswith("Reattributed 2 failed payments from ")
        assert lines[0].endswith("; 1 changed cause.")
        assert sorted(line.split() for line in lines[1:]) == [["isp", "1"], ["unknown", "1"]]
        row = txn_row(db, "T-1", "a")
        assert row["cause"] == "isp" and row["local_cause"] == "isp"
        (incident,) = incidents(db)
        assert incident["cause"] == "isp" and row["incident_id"] == incident["id"]

        # a range that holds none of them changes nothing
        until = (t - 5 * MIN).strftime("%Y-%m-%dT%H:%M:%SZ")
        done = run_collector_cli("reattribute", "--db", str(db), "--since", "3h",
                                 "--until", until)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "Reattributed 0 failed payments" in done.stdout

        # the server went on working meanwhile
        term.post(txn(now_s() - MIN, "c", "timeout"))
        wait_caught_up(db)
        assert txn_row(db, "T-1", "c")["cause"] is not None
    finally:
        proc.stop()


def test_reattribute_usage_errors_name_the_flag(tmp_path: Path) -> None:
    db = tmp_path / "missing.db"
    done = run_collector_cli("reattribute", "--db", str(db), "--since", "yesterday")
    assert done.returncode == 2 and "--since" in done.stderr and "30m" in done.stderr
    done = run_collector_cli("reattribute", "--db", str(db), "--since", "2h")
    assert done.returncode == 2 and "no such database file" in done.stderr
    assert not db.exists()  # nothing created
    done = run_collector_cli("reattribute", "--db", str(db), "--since", "1h", "--until", "2h")
    assert done.returncode == 2 and "--since" in done.stderr and "later than --until" in done.stderr
    done = run_collector_cli("reattribute", "--db", str(db))
    assert done.returncode == 2 and "--since" in done.stderr
    done = run_collector_cli("reattribute", "--since", "1h")
    assert done.returncode == 2 and "db" in done.stderr


def test_reattribute_help_explains_the_forms() -> None:
    done = run_collector_cli("reattribute", "--help")
    assert done.returncode == 0
    for word in ("--since", "--until", "--config", "--db", "2h", "ISO 8601"):
        assert word in done.stdout
