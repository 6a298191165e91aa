"""Real agent processes for end-to-end tests, and what their spools and the
collector's database say."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import json_lines

ROOT = Path(__file__).resolve().parents[2]

BASE_CONFIG: dict[str, dict[str, Any]] = {
    "agent": {"terminal_id": "T-1", "store_id": "S-1"},
    "spool": {"path": "spool.db"},
    "uplink": {
        "interval_s": 0.05,
        "batch_max_events": 200,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.5,
    },
    "host": {"interval_s": 0.2},
    "api": {"listen": "127.0.0.1:0"},
    "log": {"level": "info", "format": "json"},
    "synthetic": {"rate_per_s": 0},
    # Tests that want probes list them (probe_list) or set defaults = true.
    "probes": {"defaults": False},
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def write_config(
    directory: Path,
    url: str,
    token: str,
    *,
    probe_list: Sequence[dict[str, Any]] = (),
    device_list: Sequence[dict[str, Any]] = (),
    **overrides: dict[str, Any],
) -> Path:
    """An agent.toml in ``directory``: BASE_CONFIG with sections overridden key by
    key, one ``[[probe]]`` table per item of ``probe_list`` and one ``[[device]]``
    per item of ``device_list``."""
    sections = {name: dict(values) for name, values in BASE_CONFIG.items()}
    sections["collector"] = {"url": url, "token": token, "timeout_s": 2.0}
    for name, values in overrides.items():
        sections.setdefault(name, {}).update(values)
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(v)}" for key, v in values.items()]
        lines.append("")
    for table, items in (("probe", probe_list), ("device", device_list)):
        for item in items:
            lines.append(f"[[{table}]]")
            lines += [f"{key} = {_toml_value(v)}" for key, v in item.items()]
            lines.append("")
    path = directory / "agent.toml"
    path.write_text("\n".join(lines))
    return path


@dataclass
class AgentProc:
    config: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL: no stop event, no flush — a power cut as far as the process knows."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def log_events(self) -> list[dict[str, Any]]:
        return json_lines(self.log.read_text(errors="replace").splitlines())


#: Every agent process started, so a failing test cannot leave one behind.
RUNNING: list[subprocess.Popen[bytes]] = []


def kill_leftovers() -> None:
    while RUNNING:
        proc = RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def start_agent(config: Path, name: str = "agent") -> AgentProc:
    log = config.parent / f"{name}-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    RUNNING.append(proc)
    agent = AgentProc(config, proc, log)
    wait_for(lambda: any(e.get("event") == "agent_started" for e in agent.log_events()),
             what="agent_started", proc=proc, log=log)  # fmt: skip
    return agent


def wait_for(
    condition: Callable[[], object],
    *,
    what: str,
    timeout: float = 60.0,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll until ``condition()`` is true; fail (not a timing assertion: a hang guard)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            detail = log.read_text(errors="replace")[-3000:] if log else ""
            raise AssertionError(f"process exited ({proc.returncode}) waiting for {what}\n{detail}")
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s")


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def spool_state(spool: Path) -> dict[str, Any]:
    db = _ro(spool)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        depth = db.execute("SELECT count(*) FROM events").fetchone()[0]
        quarantined = db.execute("SELECT count(*) FROM quarantine").fetchone()[0]
    finally:
        db.close()
    return {"meta": meta, "depth": depth, "quarantined": quarantined}


def collector_rows(db_path: Path, agent_id: str | None = None) -> list[tuple[str, int, str, str]]:
    """(agent_id, seq, kind, body) of every stored event, in order."""
    db = _ro(db_path)
    try:
        sql = "SELECT agent_id, seq, kind, body FROM events"
        params: tuple[str, ...] = ()
        if agent_id is not None:
            sql += " WHERE agent_id = ?"
            params = (agent_id,)
        return [tuple(r) for r in db.execute(sql + " ORDER BY agent_id, seq", params)]  # type: ignore[misc]
    finally:
        db.close()


def assert_conserved(
    spool: Path, collector_db: Path
) -> tuple[str, list[tuple[str, int, str, str]]]:
    """Every seq the agent ever assigned is in the collector exactly once.

    Checked by identity (agent id, seq), not by counts: the spool's next_seq
    says which seqs exist; none was dropped in these tests (the spool bound
    is far away), so the collector must hold exactly 1 … next_seq-1.
    """
    state = spool_state(spool)
    assert state["depth"] == 0, f"spool not drained: {state}"
    assert state["quarantined"] == 0, f"events were quarantined: {state}"
    assert not any(k.startswith("dropped_") for k in state["meta"]), state["meta"]
    agent_id = state["meta"]["agent_id"]
    assigned = set(range(1, int(state["meta"]["next_seq"])))
    rows = collector_rows(collector_db, agent_id)
    seqs = [r[1] for r in rows]
    assert len(seqs) == len(set(seqs)), "duplicate rows in the collector"
    missing = sorted(assigned - set(seqs))
    extra = sorted(set(seqs) - assigned)
    assert not missing, f"{len(missing)} events lost, first {missing[:10]}"
    assert not extra, f"{len(extra)} events the agent never assigned: {extra[:10]}"
    db = _ro(collector_db)
    try:
        total, distinct = db.execute(
            "SELECT count(*), count(DISTINCT agent_id || ':' || seq) FROM events"
        ).fetchone()
    finally:
        db.close()
    assert total == distinct
    return agent_id, rows


def drain(config: Path, spool: Path) -> None:
    """Run an agent without load until its spool is empty, then stop it cleanly."""
    agent = start_agent(config, name="drain")
    try:
        wait_for(lambda: spool_state(spool)["depth"] == 0, what="spool drained",
                 proc=agent.proc, log=agent.log)  # fmt: skip
    finally:
        assert agent.stop() == 0
    # The clean stop recorded a last event and flushed it; if the flush lost a
    # race with the deadline, one more start/stop sends it.
    if spool_state(spool)["depth"]:
        agent = start_agent(config, name="drain2")
        wait_for(lambda: spool_state(spool)["depth"] <= 1, what="second drain", proc=agent.proc)
        agent.stop()
