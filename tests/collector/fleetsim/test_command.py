"""``posmon-collector simulate-fleet`` as a real command: help, errors, a short run."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from tests.collector.wire import count
from tests.helpers import CollectorProc, run_collector_cli

SHORT = """\
duration = "20m"
stores = 2
terminals = 1
payments_per_hour = 60

[[fault]]
kind = "pinpad_unplugged"
stores = ["S002"]
at = "5m"
duration = "10m"
"""


def _scenario(tmp_path: Path, text: str = SHORT, name: str = "short.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_help_explains_the_command() -> None:
    done = run_collector_cli("simulate-fleet", "--help")
    assert done.returncode == 0
    for flag in ("--url", "--db", "--config", "--scenario", "--stores", "--terminals",
                 "--seed", "--start", "--truth", "--score", "--quiet"):  # fmt: skip
        assert flag in done.stdout, flag
    assert "mixed" in done.stdout  # the shipped examples are named
    top = run_collector_cli("--help")
    assert "simulate-fleet" in top.stdout


def test_usage_errors_exit_2_naming_the_flag_or_key(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    scenario = str(_scenario(tmp_path))
    done = run_collector_cli(
        "simulate-fleet", "--url", "http://127.0.0.1:1", "--scenario", scenario
    )
    assert done.returncode == 2 and "--db or --config is needed" in done.stderr
    done = run_collector_cli(
        "simulate-fleet", "--url", "127.0.0.1:1", "--db", db, "--scenario", scenario
    )
    assert done.returncode == 2 and "--url: '127.0.0.1:1' is not an http://" in done.stderr
    bad = _scenario(
        tmp_path, SHORT.replace('kind = "pinpad_unplugged"', 'kind = "pinpad"'), "bad.toml"
    )
    done = run_collector_cli(
        "simulate-fleet", "--url", "http://127.0.0.1:1", "--db", db, "--scenario", str(bad)
    )
    assert done.returncode == 2
    assert "bad.toml: fault[0].kind: 'pinpad' is not one of" in done.stderr
    done = run_collector_cli(
        "simulate-fleet", "--url", "http://127.0.0.1:1", "--db", db, "--scenario", scenario,
        "--stores", "1",
    )  # fmt: skip
    assert done.returncode == 2 and "fault[0].stores: 'S002' is not a store" in done.stderr
    done = run_collector_cli(
        "simulate-fleet", "--url", "http://127.0.0.1:1", "--db", db, "--scenario", scenario,
        "--start", "yesterday",
    )  # fmt: skip
    assert done.returncode == 2 and "--start" in done.stderr


def test_unreachable_collector_exits_1(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    done = run_collector_cli(
        "simulate-fleet", "--url", url, "--db", str(tmp_path / "c.db"),
        "--scenario", str(_scenario(tmp_path)), "--quiet",
    )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot reach the collector at {url}" in done.stderr


def test_tokens_in_another_database_are_refused_with_401(
    collector: CollectorProc, tmp_path: Path
) -> None:
    done = run_collector_cli(
        "simulate-fleet", "--url", collector.url, "--db", str(tmp_path / "other.db"),
        "--scenario", str(_scenario(tmp_path)), "--quiet",
    )  # fmt: skip
    assert done.returncode == 1
    assert "the collector answered 401" in done.stderr
    assert "is the token in the collector's database?" in done.stderr


def test_a_short_run_posts_everything_and_writes_the_truth(
    collector: CollectorProc, tmp_path: Path
) -> None:
    truth = tmp_path / "truth.jsonl"
    done = run_collector_cli(
        "simulate-fleet", "--url", collector.url, "--db", str(collector.db_path),
        "--scenario", str(_scenario(tmp_path)), "--seed", "4", "--truth", str(truth),
        "--start", "2026-03-01T09:00:00Z",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "simulate-fleet: run " in done.stderr  # progress
    summary = done.stdout.strip().splitlines()[-1]
    assert " 0 duplicates) for 2 terminals" in summary
    events = count(collector.db_path, "events")
    assert f"({events} events, " in summary
    lines = [json.loads(line) for line in truth.read_text().splitlines()]
    assert lines, "a PIN pad unplugged for 10 minutes at 60 payments/h fails payments"
    assert {line["expected_cause"] for line in lines} <= {"device", "unknown"}
    device = [line for line in lines if line["expected_cause"] == "device"]
    assert device and {line["terminal_id"] for line in device} == {"S002-T1"}
    assert set(lines[0]) >= {
        "terminal_id", "store_id", "txn_id", "ts", "outcome", "in_doubt", "expected_cause", "fault"
    }  # fmt: skip
    assert all(line["fault"] == "pinpad_unplugged-0" for line in device)
