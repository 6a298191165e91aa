"""``posmon-agent check-config`` and ``status`` against real processes, and the demo."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.agents import ROOT, spool_state, start_agent, wait_for, write_config
from tests.helpers import CollectorProc, create_token


def agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip


def test_check_config_passes_with_a_good_token(tmp_path: Path, collector: CollectorProc) -> None:
    token = create_token(collector.db_path, terminal="T-1", store="S-1")
    config = write_config(tmp_path, collector.url, token)
    done = agent_cli("check-config", "--config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"ok\s+token\s+accepted for terminal T-1", done.stdout)
    assert re.search(r"ok\s+collector", done.stdout) and "ready" in done.stdout


def test_check_config_fails_on_a_foreign_or_unknown_token(
    tmp_path: Path, collector: CollectorProc
) -> None:
    other = create_token(collector.db_path, terminal="T-2", store="S-1")
    config = write_config(tmp_path, collector.url, other)  # configured as T-1
    done = agent_cli("check-config", "--config", str(config))
    assert done.returncode == 1
    assert re.search(r"FAIL\s+token\s+the collector refused the token \(403\)", done.stdout)

    write_config(tmp_path, collector.url, "no-such-token")
    done = agent_cli("check-config", "--config", str(config))
    assert done.returncode == 1
    assert re.search(r"FAIL\s+token\s+.*\(401\)", done.stdout)


def test_check_config_fails_when_the_collector_is_down(
    tmp_path: Path, collector: CollectorProc
) -> None:
    url = collector.url
    collector.stop()
    config = write_config(tmp_path, url, "whatever")
    done = agent_cli("check-config", "--config", str(config))
    assert done.returncode == 1
    assert re.search(r"FAIL\s+collector\s+cannot reach", done.stdout)


def test_check_config_names_the_bad_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:1", "t", uplink={"interval_s": -1})
    done = agent_cli("check-config", "--config", str(config))
    assert done.returncode == 1
    assert "uplink.interval_s" in done.stdout and str(config) in done.stdout
    run = agent_cli("run", "--config", str(config))
    assert run.returncode == 1 and "uplink.interval_s" in run.stderr
    assert not (tmp_path / "spool.db").exists()  # nothing was started


def test_status_of_a_running_agent_and_of_a_stopped_one(
    tmp_path: Path, collector: CollectorProc
) -> None:
    token = create_token(collector.db_path, terminal="T-1", store="S-1")
    config = write_config(tmp_path, collector.url, token, host={"interval_s": 0.05})
    agent = start_agent(config)
    try:
        wait_for(lambda: int(spool_state(tmp_path / "spool.db")["meta"]["next_seq"]) > 5,
                 what="some events", proc=agent.proc)  # fmt: skip
        wait_for(lambda: json.loads(agent_cli("status", "--config", str(config), "--json").stdout)
                 ["uplink"]["uploads"] > 0, what="an upload")  # fmt: skip
        done = agent_cli("status", "--config", str(config), "--json")
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        assert status["running"] is True
        assert status["agent"]["terminal_id"] == "T-1"
        assert status["agent"]["id"] == spool_state(tmp_path / "spool.db")["meta"]["agent_id"]
        assert status["uplink"]["state"] == "ok" and status["uplink"]["last_upload_at"]
        assert status["sources"]["host"]["state"] == "ok"
        assert {"depth", "bytes", "max_bytes", "quarantined", "dropped"} <= set(status["spool"])
        text = agent_cli("status", "--config", str(config))
        assert text.returncode == 0
        assert "terminal T-1" in text.stdout and "uplink    ok" in text.stdout
    finally:
        assert agent.stop() == 0
    done = agent_cli("status", "--config", str(config))
    assert done.returncode == 1
    assert "not answering" in done.stdout and "events waiting" in done.stdout


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for command in ("run", "check-config", "status", "diagnose"):
        done = agent_cli(command, "--help")
        assert done.returncode == 0 and "--config" in done.stdout
        assert f"posmon-agent {command}" in readme
    done = agent_cli("simulate", "--help")
    assert done.returncode == 0 and "printer" in done.stdout and "--link" in done.stdout
    assert "posmon-agent simulate" in readme
    top = agent_cli("--help")
    assert top.returncode == 0 and "check-config" in top.stdout


def test_the_demo_names_the_causes_then_shows_events_arriving_and_cleans_up() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "collector.demo", "--seconds", "6"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # the fleet part: the score table, then what the posmon CLI shows
    overall = re.search(r"^all\s+(\d+)\s+(\d+)\s+([\d.]+)%", done.stdout, re.M)
    assert overall is not None, done.stdout
    assert int(overall.group(1)) > 100 and float(overall.group(3)) >= 95.0
    assert re.search(r"CLOSED .* payments\s+acquirer_outage\s+acquirer acquirer-a", done.stdout)
    assert "IN DOUBT" in done.stdout and "Terminal S008-T1 in store S008" in done.stdout
    counts = [int(m) for m in re.findall(r"stored\s+(\d+) events", done.stdout)]
    assert len(counts) >= 4 and counts[-1] > counts[0] >= 0
    assert "txn" in done.stdout and "host_sample" in done.stdout
    assert "device_status" in done.stdout and "printer is ok" in done.stdout
    workdir = re.search(r"cleaned up (\S+)", done.stdout)
    assert workdir is not None and not Path(workdir.group(1)).exists()
