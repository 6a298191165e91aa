"""Log tailing in real processes: a POS application's log written by its own
process, rotated both ways mid-stream, a real agent SIGKILLed mid-file and
restarted, a real collector at the end of the line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import IO, Any

from agent.logtail.source import Position
from tests.agent import pan_corpus
from tests.e2e.agents import (
    ROOT,
    AgentProc,
    assert_conserved,
    collector_rows,
    spool_state,
    start_agent,
    wait_for,
    write_config,
)
from tests.e2e.log_writer import RULES
from tests.helpers import CollectorProc, create_token


class LogWriter:
    """The writer process (tests/e2e/log_writer.py), one command at a time."""

    def __init__(self, path: Path, seed: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.log_writer", str(path), str(seed)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip

    @property
    def _stdin(self) -> IO[str]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def send(self, command: str) -> None:
        """Start a command; :meth:`answer` waits for it."""
        self._stdin.write(command + "\n")
        self._stdin.flush()

    def answer(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("ok "), line
        return line[3:].strip()

    def do(self, command: str) -> str:
        self.send(command)
        return self.answer()

    def stop(self) -> None:
        self._stdin.close()
        self.proc.wait(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def logfile_toml(path: Path, rules: str) -> str:
    return (
        f"\n[[logfile]]\npath = {json.dumps(str(path))}\npoll_s = 0.05\n"
        f'start_at = "beginning"\n{rules}'
    )


def stored_position(spool: Path, log: Path) -> Position | None:
    value = spool_state(spool)["meta"].get(f"logtail:{log}")
    return None if value is None else Position.decode(value)


def caught_up(spool: Path, log: Path) -> bool:
    """The agent stored a position at the end of the file the path names now."""
    pos = stored_position(spool, log)
    try:
        st = os.stat(log)
    except FileNotFoundError:
        return False
    return pos is not None and (pos.dev, pos.ino, pos.offset) == (st.st_dev, st.st_ino, st.st_size)


def tail_status(spool: Path) -> dict[str, Any]:
    url = spool_state(spool)["meta"]["api_url"]
    with urllib.request.urlopen(f"{url}/v1/status", timeout=10) as answer:
        (status,) = json.load(answer)["logtails"]
    assert isinstance(status, dict)
    return status


def test_rotations_both_ways_and_sigkill_mid_file_lose_and_repeat_no_line(
    tmp_path: Path, collector: CollectorProc
) -> None:
    token = create_token(collector.db_path, terminal="T-1", store="S-1")
    config = write_config(tmp_path, collector.url, token, payments={"timeout_s": 3600})
    logs = tmp_path / "pos"
    logs.mkdir()
    log = logs / "payments.log"
    with config.open("a") as f:
        f.write(logfile_toml(log, RULES))
    spool = tmp_path / "spool.db"
    writer = LogWriter(log, seed=7)
    agent: AgentProc | None = None
    runs: list[dict[str, Any]] = []

    procs: list[AgentProc] = []

    def start() -> AgentProc:
        proc = start_agent(config, name=f"agent{len(runs)}")
        runs.append({})
        procs.append(proc)
        return proc

    def settle(what: str) -> None:
        assert agent is not None
        wait_for(lambda: caught_up(spool, log), what=what, proc=agent.proc, log=agent.log)
        runs[-1] = tail_status(spool)
        assert "duplicate" not in runs[-1]["results"], runs[-1]  # no line read twice

    try:
        agent = start()
        writer.do("burst 200")
        settle("the first lines")

        # Rotation by rename, mid-stream: the writer keeps writing to the renamed
        # file (until its "HUP"), logrotate creates the new one, then it reopens.
        writer.send("burst 120")
        writer.answer()
        writer.do("rename")
        writer.do("burst 40")  # into the renamed file
        writer.do("create")
        writer.do("burst 40")  # still into the renamed file; the new one is empty
        writer.do("reopen")
        writer.do("burst 150")
        settle("after the rename")
        assert runs[-1]["rotations"] == 1

        # Rotation by copytruncate, mid-stream: lines written just before the
        # copy may be unread when the file is truncated; the copy holds them.
        writer.do("burst 60")
        writer.do("copytruncate")
        writer.do("burst 150")
        settle("after the copytruncate")
        assert runs[-1]["truncations"] == 1

        # SIGKILL mid-file, while lines are being written; a copytruncate while
        # the agent is down; restart.
        writer.send("burst 400")
        first = stored_position(spool, log)
        wait_for(lambda: stored_position(spool, log) != first, what="reading the burst",
                 proc=agent.proc, log=agent.log)  # fmt: skip
        agent.kill()
        agent = None
        writer.answer()
        writer.do("copytruncate")
        writer.do("burst 100")
        agent = start()
        settle("after the kill and a copytruncate while down")

        # SIGKILL mid-file again; a rename rotation while the agent is down (the
        # old file is found by its inode); restart.
        writer.send("burst 400")
        first = stored_position(spool, log)
        wait_for(lambda: stored_position(spool, log) != first, what="reading the burst",
                 proc=agent.proc, log=agent.log)  # fmt: skip
        agent.kill()
        agent = None
        writer.answer()
        writer.do("rename")
        writer.do("burst 30")
        writer.do("reopen")
        writer.do("burst 100")
        agent = start()
        settle("after the kill and a rename while down")

        writer.do("finish")
        settle("the last lines")
        truth: dict[str, dict[str, Any]] = json.loads(writer.do("truth"))
        wait_for(lambda: spool_state(spool)["depth"] == 0, what="spool drained",
                 proc=agent.proc, log=agent.log)  # fmt: skip
        size = log.stat().st_size
        status = json.loads(agent_status_text(config, "--json"))
        text = agent_status_text(config)
    finally:
        writer.stop()
        if agent is not None:
            assert agent.stop() == 0
    assert len(runs) == 3
    # Each run met what it was meant to meet (the agent logs JSON, flushed per line).
    seen = [{e["event"]: e for e in p.log_events() if "event" in e} for p in procs]
    assert seen[0]["logfile_rotated"]["path"] == str(log)
    assert seen[0]["logfile_truncated"]["copy"] == str(log.with_name("payments.log.2"))
    assert seen[1]["logfile_truncated"]["copy"] == str(log.with_name("payments.log.3"))
    assert seen[2]["logfile_resumed"]["rotated"] == str(log.with_name("payments.log.4"))

    # Exactly one txn per ended payment, with the fields of both its lines.
    _, rows = assert_conserved(spool, collector.db_path)
    txns = [json.loads(body) for _, _, kind, body in rows if kind == "txn"]
    ids = [t["txn_id"] for t in txns]
    assert len(ids) == len(set(ids)), "a payment twice"
    assert sorted(ids) == sorted(truth), "payments lost or invented"
    assert len(truth) > 500
    for txn in txns:
        line = truth[txn["txn_id"]]
        for name in ("started_at", "ended_at"):  # both lines arrived
            assert txn[name] == line[name].replace("Z", "000Z"), (name, txn, line)
        for name in ("outcome", "amount_minor", "acquirer", "response_code", "stan"):
            assert txn[name] == line[name], (name, txn, line)
        assert txn["txn_kind"] == "sale" and txn["currency"] == "EUR"
        assert txn["in_doubt"] is (line["outcome"] == "timeout")
    # No payment left open: no start line was lost without its end being lost too.
    assert status["payments"]["open"] == 0
    (tail,) = status["logtails"]
    assert tail["undecodable_bytes"] > 0  # the writer's Latin-1 glitches
    assert (tail["state"], tail["reading"], tail["offset"]) == ("following", str(log), size)
    assert f"logfile   {log}: following at byte {size}; {tail['lines']} lines, " in text


def agent_status_text(config: Path, *flags: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "status", "--config", str(config), *flags],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    return done.stdout


def txns_in(db: Path) -> int:
    return sum(1 for r in collector_rows(db) if r[2] == "txn")


PAN_RULES = r"""
[[logfile.rule]]
pattern = '^END id=(?P<txn_id>.{1,110}?) result=(?P<outcome>\w+) msg=(?P<message>.*)$'
outcome_map = { DECL = "declined" }

[[logfile.rule]]
pattern = '^TXN (?P<txn_id>\S+) failed at (?P<ended_at>.+)$'
set = { outcome = "error" }
"""


def test_card_numbers_in_log_lines_reach_no_file_and_no_log(
    tmp_path: Path, collector: CollectorProc
) -> None:
    token = create_token(collector.db_path, terminal="T-1", store="S-1")
    config = write_config(tmp_path, collector.url, token)
    logs = tmp_path / "pos"
    logs.mkdir()
    log = logs / "payments.log"  # the POS's own log holds the card numbers: not ours
    with config.open("a") as f:
        f.write(logfile_toml(log, PAN_RULES))
    spool = tmp_path / "spool.db"
    positives = pan_corpus.positives()
    assert len(positives) >= 10_000
    lines = []
    ended = 0
    for i, text in enumerate(positives):
        match i % 4:
            case 0:  # in the message a rule captures
                lines.append(f"END id=pan-{i} result=DECL msg={text}")
                ended += 1
            case 1:  # in the id a rule captures (a careless POS logs the PAN there)
                lines.append(f"END id=pan-{i}-{text[:100]} result=DECL msg=card read")
                ended += 1
            case 2:  # in a line no rule matches
                lines.append(text)
            case _:  # in a value the agent refuses, and logs (masked) why
                lines.append(f"TXN pan-{i} failed at {text[:40]}")
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")

    agent = start_agent(config)
    try:
        wait_for(lambda: caught_up(spool, log), what="the whole log read",
                 proc=agent.proc, log=agent.log, timeout=300)  # fmt: skip
        wait_for(lambda: txns_in(collector.db_path) == ended, what="every payment in the collector",
                 proc=agent.proc, log=agent.log, timeout=120)  # fmt: skip
        status = json.loads(agent_status_text(config, "--json"))
    finally:
        assert agent.stop() == 0
    (tail,) = status["logtails"]
    assert tail["lines"] == len(positives)
    carrying = sum(1 for line in lines if pan_corpus.looks_like_card(line))
    assert carrying > 7500  # (a cut line may have lost its card number)
    assert tail["masked"] >= carrying
    assert tail["rejected"] == len(positives) // 4
    assert any(e.get("event") == "logline_rejected" for e in agent.log_events())

    collector.stop()
    files = [p for p in tmp_path.iterdir() if p.name.startswith(("spool.db", "collector.db"))]
    files += list(tmp_path.glob("*.log"))  # the agent's own log output
    assert any(p.name == "spool.db" for p in files) and any(p.name == "collector.db" for p in files)
    assert any(p.name.startswith("agent") for p in files)
    for path in files:
        assert pan_corpus.find_card_numbers(path.read_bytes()) == [], path
    assert pan_corpus.find_card_numbers(log.read_bytes())  # the POS log did hold them
