"""Devices in a real agent process: a simulator subprocess on a pty, the agent
polling it, device_status at a real collector; diagnose on the same device."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.e2e.agents import ROOT, collector_rows, start_agent, wait_for, write_config
from tests.e2e.test_agent_cli import agent_cli
from tests.helpers import CollectorProc, create_token


class Simulator:
    def __init__(self, kind: str, link: Path) -> None:
        self.link = link
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "simulate", kind, "--link", str(link)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        banner = self._out.readline()
        assert str(link) in banner, banner
        self._out.readline()  # the list of commands

    @property
    def _out(self) -> IO[str]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def command(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self._out.readline()
        assert answer.startswith("ok "), answer
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def printer(tmp_path: Path) -> Iterator[Simulator]:
    sim = Simulator("printer", tmp_path / "ttyPRINTER")
    yield sim
    sim.stop()


def statuses(db: Path) -> list[dict[str, Any]]:
    return [json.loads(b) for _, _, kind, b in collector_rows(db) if kind == "device_status"]


def test_printer_faults_unplug_and_replug_reach_the_collector(
    tmp_path: Path, collector: CollectorProc, printer: Simulator
) -> None:
    token = create_token(collector.db_path, terminal="T-1", store="S-1")
    config = write_config(
        tmp_path, collector.url, token,
        device_list=[{"name": "receipt", "kind": "escpos_printer", "port": str(printer.link),
                      "interval_s": 0.2, "timeout_s": 0.5}],
    )  # fmt: skip
    agent = start_agent(config)

    def reach(state: str, flag: str | None = None) -> None:
        def there() -> bool:
            rows = statuses(collector.db_path)
            return (
                bool(rows)
                and rows[-1]["state"] == state
                and (flag in rows[-1]["flags"] if flag else not rows[-1]["flags"])
            )

        wait_for(there, what=f"{state} {flag}", proc=agent.proc, log=agent.log)

    try:
        reach("ok")
        printer.command("paper_end")
        reach("fault", "paper_end")
        status = json.loads(agent_cli("status", "--config", str(config), "--json").stdout)
        (device,) = status["devices"]
        assert (device["name"], device["state"]) == ("receipt", "fault")
        assert "paper_end" in device["flags"]
        assert "replace the roll" in device["reason"]
        text = agent_cli("status", "--config", str(config)).stdout
        assert "device    receipt (escpos_printer" in text and "paper end" in text
        printer.command("unplug")
        reach("disconnected")
        printer.command("replug")
        reach("fault", "paper_end")  # back, still without paper
        printer.command("ok")
        reach("ok")
    finally:
        assert agent.stop() == 0
    rows = statuses(collector.db_path)
    assert all(r["device"] == "receipt" and r["device_kind"] == "escpos_printer" for r in rows)
    changes = [r["state"] for r in rows if not r["heartbeat"]]
    assert changes == ["ok", "fault", "disconnected", "fault", "ok"]


def test_diagnose_reports_the_printer_in_plain_words(tmp_path: Path, printer: Simulator) -> None:
    config = write_config(
        tmp_path, "http://127.0.0.1:9", "t",
        device_list=[{"name": "receipt", "kind": "escpos_printer", "port": str(printer.link)}],
    )  # fmt: skip
    printer.command("paper_end")
    done = agent_cli("diagnose", "--config", str(config))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "receipt: fault [" in done.stdout and "paper_end" in done.stdout
    assert "] — paper end — replace the roll" in done.stdout
    printer.command("ok")
    done = agent_cli("diagnose", "--config", str(config), "--json")
    doc = json.loads(done.stdout)
    assert done.returncode == 0 and doc["devices"][0]["state"] == "ok"
    printer.command("unplug")
    done = agent_cli("diagnose", "--config", str(config))
    assert done.returncode == 1
    assert "receipt: disconnected" in done.stdout and "check its cable" in done.stdout
