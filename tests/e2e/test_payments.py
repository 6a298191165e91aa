"""Payments through the local API of real agent processes: bad input refused with
nothing stored, 202 only once durable, status, a POS simulator's day with an
agent SIGKILL in the middle, and card numbers that never reach a file."""

from __future__ import annotations

import http.client
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent import pan_corpus
from tests.e2e.agents import (
    ROOT,
    AgentProc,
    assert_conserved,
    collector_rows,
    drain,
    spool_state,
    start_agent,
    wait_for,
    write_config,
)
from tests.helpers import CollectorProc, create_token

Answer = tuple[int, dict[str, Any]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_url(spool: Path) -> str:
    return str(spool_state(spool)["meta"]["api_url"])


class Client:
    """One kept-alive HTTP/1.1 connection to the agent's local API."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def post(self, path: str, body: object, headers: dict[str, str] | None = None) -> Answer:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.conn.request(
            "POST", path, data, {"Content-Type": "application/json", **(headers or {})}
        )
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")

    def get(self, path: str) -> Answer:
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")

    def close(self) -> None:
        self.conn.close()


def raw_request(url: str, request: bytes) -> bytes:
    """Send bytes as they are; return everything the agent answers until it closes."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def stored(spool: Path) -> dict[str, Any]:
    """What the spool holds of payments: txn events, payment rows, counters."""
    db = sqlite3.connect(f"file:{spool}?mode=ro", uri=True, timeout=10)
    try:
        txns = [json.loads(b) for (b,) in db.execute("SELECT body FROM events WHERE kind='txn'")]
        rows = dict(db.execute("SELECT txn_id, state FROM payments").fetchall())
        counts = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE 'payments.%'"))
    finally:
        db.close()
    return {"txns": txns, "rows": rows, "counts": counts}


def agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip


@pytest.fixture
def lone_agent(tmp_path: Path) -> Iterator[tuple[AgentProc, Path]]:
    """An agent whose collector is unreachable: whatever it stores stays in its spool.
    Its timeout (3 s) is short for tests, and long enough for a few posts in a row."""
    config = write_config(tmp_path, f"http://127.0.0.1:{free_port()}", "token",
                          payments={"timeout_s": 3})  # fmt: skip
    agent = start_agent(config)
    yield agent, tmp_path / "spool.db"
    agent.stop()


# -- bad input ---------------------------------------------------------------

B = {"txn_id": "b"}
END = {"txn_id": "b", "outcome": "approved"}
BAD: list[tuple[str, object, int, str | None]] = [
    ("amount as a decimal string", {**B, "amount_minor": "12.50"}, 400, "amount_minor"),
    ("amount with a fraction", {**B, "amount_minor": 12.5}, 400, "amount_minor"),
    ("outcome a number", {**B, "outcome": 0}, 400, "outcome"),
    ("txn_id a number", {"txn_id": 7}, 400, "txn_id"),
    ("stan a number", {**B, "stan": 123}, 400, "stan"),
    ("unknown outcome", {**B, "outcome": "success"}, 400, "outcome"),
    ("unknown kind", {**B, "kind": "purchase"}, 400, "kind"),
    ("bad currency", {**B, "currency": "EURO"}, 400, "currency"),
    ("bad timestamp", {**B, "started_at": "21/11/2026 10:00"}, 400, "started_at"),
    ("timestamp without zone", {**B, "started_at": "2026-11-21T10:00:00"}, 400, "started_at"),
    ("impossible date", {**END, "ended_at": "2026-02-30T10:00:00Z"}, 400, "ended_at"),
    ("negative amount", {**B, "amount_minor": -100}, 400, "amount_minor"),
    ("unknown field", {**B, "amount": 100}, 400, "amount"),
    ("missing txn_id", {"outcome": "approved"}, 400, "txn_id"),
    ("end time without outcome", {**B, "ended_at": "2026-11-21T10:00:00Z"}, 400, "outcome"),
    ("end before start", {**END, "started_at": "2026-11-21T10:00:01Z",
                          "ended_at": "2026-11-21T10:00:00Z"}, 400, "ended_at"),
    ("card number field", {**B, "pan": "4111111111111111"}, 422, "pan"),
    ("cvv field", {**END, "cvv2": "123"}, 422, "cvv2"),
    ("track field", {**B, "track2_data": ";4111111111111111=2512?"}, 422, "track2_data"),
    ("PIN block field", {**B, "pinBlock": "0412AC89FF00"}, 422, "pinBlock"),
    ("not JSON", b"txn_id=b&outcome=approved", 400, None),
    ("not UTF-8", b'{"txn_id": "\xff"}', 400, None),
    ("a lone surrogate", b'{"txn_id": "b", "message": "\\ud800"}', 400, None),
    ("JSON but not an object", [{"txn_id": "b"}], 400, None),
    ("oversized body", {**B, "message": "x" * (70 * 1024)}, 413, None),
]  # fmt: skip


def test_bad_requests_are_refused_naming_the_field_with_nothing_stored(
    lone_agent: tuple[AgentProc, Path],
) -> None:
    agent, spool = lone_agent
    url = api_url(spool)
    for what, body, status, field in BAD:
        client = Client(url)  # a 413 closes the connection
        try:
            got, answer = client.post("/v1/txn", body)
        finally:
            client.close()
        assert got == status, (what, answer)
        assert answer["field"] == field, (what, answer)
        assert answer["error"], what
        if field is not None:
            assert answer["error"].startswith(f"{field}: "), (what, answer)
        assert "4111111111111111" not in json.dumps(answer)  # never echoed
    # Resolutions: bad bodies, unknown payments, not in doubt
    client = Client(url)
    for body, status, field in [
        ({"txn_id": "nope", "resolution": "reversed"}, 404, "txn_id"),
        ({"txn_id": "b", "resolution": "refunded"}, 400, "resolution"),
        ({"resolution": "reversed"}, 400, "txn_id"),
        ({"txn_id": "b", "resolution": "reversed", "pan": "4111111111111111"}, 422, None),
    ]:
        got, answer = client.post("/v1/txn/resolution", body)
        assert (got, answer["field"]) == (status, field), answer
    # No Content-Length, chunked, wrong method, wrong path
    for request, status in [
        (b"POST /v1/txn HTTP/1.1\r\nHost: x\r\n\r\n", 411),
        (b"POST /v1/txn HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"2\r\n{}\r\n0\r\n\r\n", 411),
        (b"GET /v1/txn HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405),
        (b"POST /v1/nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close"
         b"\r\n\r\n{}", 404),
    ]:  # fmt: skip
        raw = raw_request(url, request)
        assert raw.startswith(f"HTTP/1.1 {status} ".encode()), raw[:200]
    # Nothing of it is in the spool: no txn event, no payment, no counter.
    assert stored(spool) == {"txns": [], "rows": {}, "counts": {}}
    # and the API still works, on the same kept-alive connection
    assert client.post("/v1/txn", {"txn_id": "good", "outcome": "approved"}) == (
        202,
        {"result": "ended"},
    )
    client.close()
    assert [t["txn_id"] for t in stored(spool)["txns"]] == ["good"]
    status = json.loads(agent_cli("status", "--config", str(agent.config), "--json").stdout)
    # every refusal the intake made is counted (those of the HTTP layer never reach it)
    refused_by_intake = sum(1 for *_, field in BAD if field is not None) + 4
    assert status["payments"]["sources"]["api"] == {"accepted": 1, "refused": refused_by_intake}
    assert status["pan_guard"]["refused_total"] == 5


# -- the happy paths, 202 only once durable -----------------------------------


def test_a_202_means_the_report_is_already_in_the_spool(
    lone_agent: tuple[AgentProc, Path],
) -> None:
    agent, spool = lone_agent
    client = Client(api_url(spool))
    start = {"txn_id": "T-1", "kind": "sale", "acquirer": "acq-a", "amount_minor": 1250,
             "currency": "EUR", "stan": "000001", "started_at": "2026-11-21T09:30:00Z"}  # fmt: skip
    end = {"txn_id": "T-1", "outcome": "approved", "response_code": "00", "auth_code": "A12345",
           "rrn": "123456789012", "ended_at": "2026-11-21T09:30:01.5Z"}  # fmt: skip
    # Each answer is checked against the file at once, without waiting.
    assert client.post("/v1/txn", start) == (202, {"result": "started"})
    assert stored(spool)["rows"] == {"T-1": "open"}
    assert client.post("/v1/txn", start) == (202, {"result": "duplicate"})
    assert client.post("/v1/txn", end) == (202, {"result": "ended"})
    now = stored(spool)
    assert now["rows"] == {"T-1": "closed"}
    [txn] = now["txns"]
    assert {k: txn[k] for k in ("txn_id", "acquirer", "outcome", "amount_minor", "currency",
                                "auth_code", "rrn", "stan", "latency_ms", "in_doubt")} == {
        "txn_id": "T-1", "acquirer": "acq-a", "outcome": "approved", "amount_minor": 1250,
        "currency": "EUR", "auth_code": "A12345", "rrn": "123456789012", "stan": "000001",
        "latency_ms": 1500.0, "in_doubt": False,
    }  # fmt: skip
    assert client.post("/v1/txn", end) == (202, {"result": "duplicate"})
    assert len(stored(spool)["txns"]) == 1
    # another end for a payment that ended: a conflict, nothing stored
    got, answer = client.post("/v1/txn", {**end, "outcome": "declined"})
    assert got == 409 and "new txn_id" in answer["error"]
    # start and end in one call; a technical decline
    both = {"txn_id": "T-2", "acquirer": "acq-b", "outcome": "declined", "response_code": "91",
            "started_at": "2026-11-21T09:31:00Z", "ended_at": "2026-11-21T09:31:30Z"}  # fmt: skip
    assert client.post("/v1/txn", both) == (202, {"result": "ended"})
    txn = stored(spool)["txns"][-1]
    assert (txn["txn_id"], txn["technical"], txn["latency_ms"]) == ("T-2", True, 30_000.0)
    # a start with no end: a timeout in doubt (timeout_s = 3), then resolved
    assert client.post("/v1/txn", {"txn_id": "T-3", "acquirer": "acq-a"})[0] == 202
    wait_for(lambda: any(t["txn_id"] == "T-3" for t in stored(spool)["txns"]),
             what="the timeout of T-3", proc=agent.proc, log=agent.log)  # fmt: skip
    txn = stored(spool)["txns"][-1]
    assert (txn["outcome"], txn["in_doubt"]) == ("timeout", True)
    assert stored(spool)["rows"]["T-3"] == "in_doubt"
    assert client.post("/v1/txn/resolution", {"txn_id": "T-3", "resolution": "reversed"}) == (
        202,
        {"result": "resolved"},
    )
    txn = stored(spool)["txns"][-1]
    assert (txn["txn_id"], txn["in_doubt"], txn["resolution"]) == ("T-3", False, "reversed")
    got, answer = client.post("/v1/txn/resolution", {"txn_id": "T-1", "resolution": "charged"})
    assert got == 409 and "not in doubt" in answer["error"]
    client.close()


def test_status_shows_counts_by_outcome_and_the_payments_in_doubt(
    lone_agent: tuple[AgentProc, Path],
) -> None:
    agent, spool = lone_agent
    client = Client(api_url(spool))
    for i, outcome in enumerate(["approved", "approved", "declined", "error"]):
        assert client.post("/v1/txn", {"txn_id": f"d{i}", "outcome": outcome})[0] == 202
    doubt = {"txn_id": "POS-0042", "acquirer": "acq-a", "amount_minor": 1250, "currency": "EUR",
             "started_at": "2026-11-21T09:30:00Z"}  # fmt: skip
    assert client.post("/v1/txn", doubt)[0] == 202
    client.close()
    wait_for(lambda: "POS-0042" in [t["txn_id"] for t in stored(spool)["txns"]],
             what="the timeout", proc=agent.proc, log=agent.log)  # fmt: skip
    done = agent_cli("status", "--config", str(agent.config), "--json")
    assert done.returncode == 0, done.stderr
    payments = json.loads(done.stdout)["payments"]
    assert payments["counts"] == {"approved": 2, "declined": 1, "timeout": 1, "error": 1,
                                  "late": 0, "resolved": 0, "technical": 0}  # fmt: skip
    assert payments["open"] == 0 and payments["in_doubt_total"] == 1
    [entry] = payments["in_doubt"]
    assert entry["txn_id"] == "POS-0042" and entry["started_at"] == "2026-11-21T09:30:00.000000Z"
    assert (entry["acquirer"], entry["amount_minor"], entry["currency"]) == ("acq-a", 1250, "EUR")
    text = agent_cli("status", "--config", str(agent.config)).stdout
    assert "payments  approved 2, declined 1, timeout 1, error 1;" in text
    assert "in doubt  1 payment:" in text
    assert "POS-0042  started 2026-11-21T09:30:00.000000Z  acq-a  12.50 EUR  (timeout)" in text
    # With the agent stopped, status still reads them from the spool file.
    assert agent.stop() == 0
    done = agent_cli("status", "--config", str(agent.config), "--json")
    assert done.returncode == 1
    offline = json.loads(done.stdout)
    assert offline["running"] is False
    assert offline["payments"]["counts"] == payments["counts"]
    assert offline["payments"]["in_doubt"] == payments["in_doubt"]
    text = agent_cli("status", "--config", str(agent.config)).stdout
    assert "posmon-agent is not answering" in text
    assert "payments  approved 2, declined 1, timeout 1, error 1;" in text
    assert "POS-0042  started 2026-11-21T09:30:00.000000Z  acq-a  12.50 EUR  (timeout)" in text


def test_a_non_loopback_api_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    for listen in ("0.0.0.0:8787", "192.168.1.10:8787", "[::]:8787", "pos.example:8787"):
        config = write_config(tmp_path, "http://127.0.0.1:1", "t", api={"listen": listen},
                              payments={"timeout_s": 1})  # fmt: skip
        for command in ("run", "check-config"):
            done = agent_cli(command, "--config", str(config))
            assert done.returncode == 1, (listen, command)
            assert "api.listen: the local API is loopback-only" in done.stdout + done.stderr
        assert not (tmp_path / "spool.db").exists()


# -- a POS application's day ---------------------------------------------------

TIMEOUT_S = 2.0


def test_a_pos_day_with_an_agent_sigkill_gives_exactly_the_expected_events(
    tmp_path: Path, collector: CollectorProc
) -> None:
    token = create_token(collector.db_path, terminal="T-1", store="S-1")
    port = free_port()
    config = write_config(tmp_path, collector.url, token, api={"listen": f"127.0.0.1:{port}"},
                          payments={"timeout_s": TIMEOUT_S})  # fmt: skip
    spool = tmp_path / "spool.db"
    agent = start_agent(config)
    truth_path = tmp_path / "truth.json"
    sim = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.pos_sim", "--url", f"http://127.0.0.1:{port}",
         "--timeout-s", str(TIMEOUT_S), "--payments", "200", "--seed", "7",
         "--truth", str(truth_path), "--open-signal-after", "80"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        assert sim.stdout.readline().strip() == "ready"
        line = sim.stdout.readline().strip()
        assert line.startswith("open "), line + (sim.stderr.read() if sim.stderr else "")
        killed_open = line.split()[1]
        # SIGKILL while that payment (and others) are open; down past the timeout.
        agent.kill()
        killed_at = time.time()
        time.sleep(TIMEOUT_S + 0.5)
        restarted_at = time.time()
        agent = start_agent(config, name="restarted")
        assert sim.stdout.readline().strip() == "done"
        assert sim.wait(timeout=60) == 0
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait()
        for stream in (sim.stdout, sim.stderr):
            if stream is not None:
                stream.close()
    truth = json.loads(truth_path.read_text())
    agent_status = json.loads(agent_cli("status", "--config", str(config), "--json").stdout)
    assert agent.stop() == 0
    drain(config, spool)

    # The collector: every seq once, and per payment exactly the expected txn
    # events (one of the two possible histories for an end sent as the agent died).
    _, rows = assert_conserved(spool, collector.db_path)
    got: dict[str, list[dict[str, Any]]] = {}
    for _agent, _seq, kind, body in rows:
        if kind == "txn":
            event = json.loads(body)
            got.setdefault(event["txn_id"], []).append(event)
    assert sorted(got) == sorted(truth["payments"])
    keys = ("outcome", "in_doubt", "late", "resolution", "technical")
    happened: list[dict[str, Any]] = []
    in_doubt: list[str] = []
    for txn_id, alternatives in truth["payments"].items():
        events = [{k: e[k] for k in keys} for e in got[txn_id]]
        matching = [alt for alt in alternatives if alt["events"] == events]
        assert len(matching) == 1, (txn_id, events, alternatives)
        happened += matching[0]["events"]
        if matching[0]["in_doubt"]:
            in_doubt.append(txn_id)
        for event in got[txn_id]:
            if event["outcome"] != "timeout" and event["started_at"] and event["ended_at"]:
                assert event["latency_ms"] is not None
    assert in_doubt and len(truth["ambiguous"]) <= 3

    # The spool: its book holds the payments in doubt, none open, and its counters
    # agree with the events.
    book = stored(spool)
    assert sorted(t for t, state in book["rows"].items() if state == "in_doubt") == in_doubt
    assert "open" not in book["rows"].values()
    ends = [e for e in happened if e["resolution"] is None]
    counts = Counter(e["outcome"] for e in ends)
    counts.update(
        late=sum(e["late"] for e in ends),
        resolved=len(happened) - len(ends),
        technical=sum(e["technical"] for e in ends),
    )
    assert {k.removeprefix("payments.count."): int(v) for k, v in book["counts"].items()} == {
        k: n for k, n in counts.items() if n
    }
    # The running agent's status listed the same payments in doubt.
    assert agent_status["payments"]["in_doubt_total"] == len(in_doubt)
    assert [d["txn_id"] for d in agent_status["payments"]["in_doubt"]] == in_doubt[:50]

    # The payment open at the SIGKILL timed out, measured from its start: its
    # timeout is dated at its deadline, before the agent was even restarted.
    [timeout] = [e for e in got[killed_open] if e["outcome"] == "timeout"]
    deadline = _epoch(timeout["ts"])
    assert killed_at - 10 < deadline - TIMEOUT_S < killed_at < deadline < restarted_at
    assert truth["retries"] > 0  # the POS did see the agent go away


def _epoch(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts).timestamp()


# -- card numbers ---------------------------------------------------------------


def test_card_numbers_sent_to_the_api_reach_no_file_and_no_log(
    tmp_path: Path, collector: CollectorProc
) -> None:
    token = create_token(collector.db_path, terminal="T-1", store="S-1")
    config = write_config(tmp_path, collector.url, token)
    spool = tmp_path / "spool.db"
    agent = start_agent(config)
    url = api_url(spool)
    positives = pan_corpus.positives()
    negatives = pan_corpus.negatives()
    assert len(positives) >= 10_000

    def report(i: int) -> dict[str, Any]:
        if i < len(positives):
            text = positives[i]
            where = i % 4
            body: dict[str, Any] = {"txn_id": f"pan-{i}", "outcome": "declined"}
            if where == 0:
                body["message"] = text
            elif where == 1:
                body["acquirer"] = text
            elif where == 2:
                body["txn_id"] = f"pan-{i} {text}"[:128]
            else:
                body.update(message=text[:120], acquirer=text[120:] or "x", response_code="05")
            return body
        return {
            "txn_id": f"neg-{i}",
            "outcome": "approved",
            "message": negatives[i - len(positives)],
        }

    total = len(positives) + len(negatives)
    failures: list[str] = []

    def worker(k: int, n: int) -> None:
        client = Client(url)
        try:
            for i in range(k, total, n):
                status, answer = client.post("/v1/txn", report(i))
                if status != 202:
                    failures.append(f"{i}: {status} {answer}")
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(k, 8)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []

    def txns_in_collector() -> int:
        return sum(1 for r in collector_rows(collector.db_path) if r[2] == "txn")

    wait_for(lambda: txns_in_collector() == total, what="every payment in the collector",
             proc=agent.proc, log=agent.log, timeout=120)  # fmt: skip
    status = json.loads(agent_cli("status", "--config", str(config), "--json").stdout)
    assert agent.stop() == 0

    # Look-alikes arrived untouched.
    messages = {
        json.loads(body)["txn_id"]: json.loads(body)["message"]
        for _a, _s, kind, body in collector_rows(collector.db_path)
        if kind == "txn"
    }
    for j, text in enumerate(negatives):
        assert messages[f"neg-{len(positives) + j}"] == text

    # The raw bytes of every file: spool (and its WAL), the agent's log, the
    # collector's database (and its WAL) and its log.
    collector.stop()
    files = [p for p in tmp_path.iterdir() if p.name.startswith(("spool.db", "collector.db"))]
    files += list(tmp_path.glob("*.log"))
    assert any(p.name == "spool.db" for p in files) and any(p.name == "collector.db" for p in files)
    for path in files:
        assert pan_corpus.find_card_numbers(path.read_bytes()) == [], path
    logs = "".join(collector.stdout_lines) + "".join(collector.stderr_lines)
    assert pan_corpus.find_card_numbers(logs) == []
    assert status["pan_guard"]["masked_total"] >= len(positives)  # and counted
