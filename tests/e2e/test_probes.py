"""Probes in a real agent process: windows and changes reach a real collector.

Targets are TCP listeners on 127.0.0.1 started by the test; one port is
closed, one listener is stopped half-way so its probe flips to ``fail``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.agents import assert_conserved, collector_rows, start_agent, wait_for, write_config
from tests.e2e.test_agent_cli import agent_cli
from tests.helpers import CollectorProc, create_token


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock
    sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def events(db: Path, kind: str) -> list[dict[str, Any]]:
    return [json.loads(body) for _, _, k, body in collector_rows(db) if k == kind]


def test_probe_windows_and_changes_reach_the_collector(
    tmp_path: Path, collector: CollectorProc, listener: socket.socket
) -> None:
    token = create_token(collector.db_path, terminal="T-1", store="S-1")
    good = f"127.0.0.1:{listener.getsockname()[1]}"
    closed = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        collector.url,
        token,
        probes={"defaults": False, "window_s": 1, "interval_s": 0.1, "fail_after": 2},
        probe_list=[
            {"name": "acq", "type": "tcp", "target": good, "role": "acquirer", "acquirer": "acme"},
            {"name": "anchor", "type": "tcp", "target": closed, "role": "isp", "timeout_s": 1},
        ],
    )
    agent = start_agent(config)
    try:

        def changes() -> set[tuple[str, str]]:
            return {(c["target"], c["state"]) for c in events(collector.db_path, "probe_change")}

        wait_for(lambda: {(good, "ok"), (closed, "fail")} <= changes(), what="first states",
                 proc=agent.proc, log=agent.log)  # fmt: skip
        wait_for(lambda: len(events(collector.db_path, "probe_window")) >= 4,
                 what="windows", proc=agent.proc, log=agent.log)  # fmt: skip
        status = json.loads(agent_cli("status", "--config", str(config), "--json").stdout)
        states = {p["name"]: (p["state"], p["role"]) for p in status["probes"]}
        assert states == {"acq": ("ok", "acquirer"), "anchor": ("fail", "isp")}
        text = agent_cli("status", "--config", str(config)).stdout
        assert "probe     anchor [isp]" in text and "fail since" in text

        listener.close()  # the acquirer's front end goes away
        wait_for(lambda: (good, "fail") in changes(), what="acquirer fail",
                 proc=agent.proc, log=agent.log)  # fmt: skip
    finally:
        assert agent.stop() == 0

    windows = events(collector.db_path, "probe_window")
    by_target: dict[str, list[dict[str, Any]]] = {}
    for w in windows:
        by_target.setdefault(w["target"], []).append(w)
    anchor = by_target[closed]
    assert all(w["ok"] == 0 and w["loss_pct"] == 100 and w["role"] == "isp" for w in anchor)
    assert all(set(w["errors"]) == {"refused"} for w in anchor)
    acq = by_target[good]
    assert all(w["acquirer"] == "acme" and w["probe"] == "tcp" for w in acq)
    assert any(w["ok"] == w["sent"] > 0 and w["rtt_avg_ms"] is not None for w in acq)
    fail = [c for c in events(collector.db_path, "probe_change") if c["target"] == good][-1]
    assert (fail["state"], fail["error"], fail["role"]) == ("fail", "refused", "acquirer")
    assert_conserved(tmp_path / "spool.db", collector.db_path)
