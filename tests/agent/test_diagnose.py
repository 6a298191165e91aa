"""``posmon-agent diagnose``: the first failing hop, from checks and from a real run."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.diagnose import Check, diagnose, render
from agent.probes.base import ProbeResult
from agent.probes.settings import ProbeSpec

ROOT = Path(__file__).resolve().parents[2]

OK = ProbeResult(ok=True, rtt_ms=1.0)


def fail(error: str = "timeout") -> ProbeResult:
    return ProbeResult(ok=False, error=error)


def check(
    role: str, result: ProbeResult | None, *, acquirer: str | None = None, n: int = 0
) -> Check:
    spec = ProbeSpec(
        name=f"{role}{n}{acquirer or ''}",
        type="tcp",
        target=f"{role}{n}:1",
        role=role,  # type: ignore[arg-type]
        acquirer=acquirer,
    )
    return Check(spec, result, None if result else "not present")


def healthy_path() -> list[Check]:
    return [
        check("link", OK),
        check("gateway", OK),
        check("isp", OK),
        check("dns", OK),
        check("acquirer", OK, acquirer="a"),
        check("collector", OK),
    ]


def with_result(checks: list[Check], role: str, result: ProbeResult | None) -> list[Check]:
    return [
        check(role, result, acquirer=c.spec.acquirer) if c.spec.role == role else c for c in checks
    ]


def test_all_healthy() -> None:
    d = diagnose(healthy_path())
    assert (d.first_failing, d.summary) == (None, "every hop is healthy")
    assert "Verdict: every hop is healthy." in render(d)


@pytest.mark.parametrize(
    ("role", "words"),
    [
        ("link", "link is down"),
        ("gateway", "link up, router not answering"),
        ("isp", "router reachable, internet not: likely the store's ISP"),
        ("dns", "internet reachable, names do not resolve"),
        ("acquirer", "names resolve, acquirer a is not reachable from here"),
        ("collector", "collector is not reachable"),
    ],
)
def test_each_hop_is_named_when_it_alone_fails(role: str, words: str) -> None:
    d = diagnose(with_result(healthy_path(), role, fail()))
    assert d.first_failing == role
    assert words in d.summary
    assert f"First failing hop: {role}." in render(d)


def test_the_first_failing_hop_on_the_path_is_blamed() -> None:
    checks = healthy_path()
    for role in ("isp", "dns", "acquirer", "collector"):
        checks = with_result(checks, role, fail())
    assert diagnose(checks).first_failing == "isp"  # dns and acquirer fail because of it


def test_a_hop_without_a_probe_is_skipped_not_guessed() -> None:
    checks = [c for c in healthy_path() if c.spec.role not in ("gateway", "isp")]
    checks = with_result(checks, "acquirer", fail("refused"))
    d = diagnose(checks)
    assert (d.first_failing, d.acquirer) == ("acquirer", "a")
    # the report never claims a hop healthy that nobody probed
    only_gateway = [c for c in healthy_path() if c.spec.role in ("gateway", "dns")]
    d = diagnose(with_result(only_gateway, "dns", fail("nxdomain")))
    assert d.summary == "router reachable, names do not resolve: DNS"
    d = diagnose([check("isp", fail())])
    assert d.summary == "internet not reachable: the store's ISP or its router"


def test_an_unavailable_probe_is_no_evidence() -> None:
    d = diagnose(with_result(healthy_path(), "gateway", None))
    assert d.first_failing is None
    assert "n/a" in render(d) and "not present" in render(d)


def test_one_anchor_down_of_two_is_degraded_not_an_isp_outage() -> None:
    checks = [*healthy_path(), check("isp", fail(), n=1)]
    d = diagnose(checks)
    assert d.first_failing is None and d.degraded == ("isp",)


def test_acquirers_are_judged_each_on_its_own() -> None:
    checks = [*healthy_path(), check("acquirer", fail("reset"), acquirer="b")]
    d = diagnose(checks)
    assert (d.first_failing, d.acquirer) == ("acquirer", "b")


def test_clock_trouble_is_named_when_the_path_is_fine() -> None:
    checks = [*healthy_path(), check("isp", fail("clock_offset"), n=2), check("isp", OK, n=3)]
    assert diagnose(checks).first_failing == "clock"
    assert (
        diagnose(
            [
                *healthy_path(),
                check(
                    "acquirer", ProbeResult(ok=False, error="tls_not_yet_valid"), acquirer="a", n=1
                ),
                check("acquirer", OK, acquirer="a", n=2),
            ]
        ).first_failing
        == "clock"
    )


def test_a_weak_wifi_signal_is_said_plainly() -> None:
    d = diagnose(with_result(healthy_path(), "link", fail("weak_signal")))
    assert (d.first_failing, d.summary) == ("link", "the Wi-Fi signal is too weak")


# ── the command, for real ───────────────────────────────────────────────────


def listen(address: str) -> Iterator[int]:
    sock = socket.socket()
    sock.bind((address, 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def listener() -> Iterator[int]:
    yield from listen("127.0.0.1")


@pytest.fixture
def anchor() -> Iterator[int]:
    """The "internet anchor": another loopback address."""
    yield from listen("127.0.0.2")


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return int(port)


def config(tmp_path: Path, isp_port: int, acquirer_port: int) -> Path:
    text = f"""
[agent]
terminal_id = "T-9"
store_id = "S-9"

[collector]
url = "http://127.0.0.1:{closed_port()}"
token = "t"

[spool]
path = "spool.db"

[[probe]]
type = "link"
target = "lo"

[[probe]]
name = "router"
type = "tcp"
target = "127.0.0.1:{acquirer_port}"
role = "gateway"

[[probe]]
name = "anchor"
type = "tcp"
target = "127.0.0.2:{isp_port}"
role = "isp"
timeout_s = 1

[[probe]]
name = "acquirer-a"
type = "tcp"
target = "localhost:{acquirer_port}"
role = "acquirer"
acquirer = "acquirer-a"
"""
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "diagnose", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_diagnose_names_the_isp_with_no_collector(tmp_path: Path, listener: int) -> None:
    path = config(tmp_path, isp_port=closed_port(), acquirer_port=listener)
    done = run("--config", str(path))
    assert done.returncode == 1, done.stderr
    out = done.stdout
    assert "terminal T-9, store S-9; 4 probes" in out
    assert "First failing hop: isp. Router reachable, internet not: likely the store's ISP." in out
    assert "FAIL  isp" in out and "refused" in out
    assert "ok    gateway" in out and "ok    acquirer acquirer-a" in out
    assert not (tmp_path / "spool.db").exists()  # a check, not a run: nothing recorded

    done = run("--config", str(path), "--json")
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    assert doc["first_failing"] == "isp" and doc["terminal_id"] == "T-9"
    verdicts = {c["name"]: (c["verdict"], c["error"]) for c in doc["checks"]}
    assert verdicts == {
        "link:lo": ("ok", None),
        "router": ("ok", None),
        "anchor": ("fail", "refused"),
        "acquirer-a": ("ok", None),
    }


def test_diagnose_all_healthy_exits_0(tmp_path: Path, listener: int, anchor: int) -> None:
    done = run("--config", str(config(tmp_path, isp_port=anchor, acquirer_port=listener)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Verdict: every hop is healthy." in done.stdout


def test_diagnose_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[agent]\n")
    done = run("--config", str(path))
    assert done.returncode == 2 and "bad config" in done.stderr
