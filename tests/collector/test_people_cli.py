"""``posmon`` against a real collector: its query API over HTTP, a fleet in its SQLite file.

The commands run in-process (``main(argv, environ)``) for speed; one test runs
the real ``python -m collector.people_cli`` process with POSMON_URL/POSMON_TOKEN.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from collector.correlate.model import IN_DOUBT_ACTION
from collector.people.client import Client
from collector.people_cli import main
from tests.collector.viewdata import ISP_ACTION, Fleet, seed_fleet
from tests.collector.wire import request
from tests.helpers import ROOT, start_collector

VIEWER_HINT = "posmon-collector token create --db PATH --viewer NAME"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    collector = start_collector(tmp_path_factory.mktemp("people") / "collector.db")
    try:
        yield seed_fleet(collector)
    finally:
        collector.stop()


class Posmon:
    """Runs ``posmon`` in-process with POSMON_URL/POSMON_TOKEN of the fleet's collector."""

    def __init__(self, fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
        self.env = {"POSMON_URL": fleet.url, "POSMON_TOKEN": fleet.viewer}
        self._capsys = capsys

    def __call__(self, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        self._capsys.readouterr()
        code = main(list(argv), self.env if env is None else env)
        out, err = self._capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str) -> str:
        code, out, err = self(*argv)
        assert code == 0, err
        return out


@pytest.fixture
def posmon(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> Posmon:
    return Posmon(fleet, capsys)


def section(text: str, title: str) -> str:
    """The lines under ``title`` up to the next blank line."""
    return text.split(f"\n{title}\n", 1)[1].split("\n\n", 1)[0]


def table_rows(text: str) -> list[list[str]]:
    """The words of each row of the table at the start of ``text`` (header left out)."""
    return [line.split() for line in text.strip("\n").split("\n\n")[0].splitlines()[1:]]


def lines_with(text: str, word: str) -> list[str]:
    return [line for line in text.splitlines() if word in line.split()]


def test_fleet_shows_states_causes_in_doubt_and_stores(posmon: Posmon) -> None:
    out = posmon.ok("fleet")
    assert "terminals        5: 1 ok, 2 warning, 1 fault, 1 offline" in out
    failed = next(line for line in out.splitlines() if "failed payments" in line)
    assert failed.split()[2] == "4"  # tx-isp, tx-gw, tx-new, tx-rev; tx-old is 2 days old
    for part in ("gateway 1", "host 1", "isp 1", "not yet attributed 1"):
        assert part in failed
    assert f"in doubt         1 unresolved — {IN_DOUBT_ACTION}" in out
    assert "open incidents   2" in out
    # store S-1: 2 terminals, 1 ok, 0 warning, 1 fault, 0 offline, 2 failed, 1 in doubt, 1 incident
    (s1,) = lines_with(out, "S-1")
    assert s1.split() == ["S-1", "2", "1", "0", "1", "0", "2", "1", "1"]


def test_json_is_the_apis_answer(posmon: Posmon, fleet: Fleet) -> None:
    data = json.loads(posmon.ok("fleet", "--json"))
    api = request(fleet.url, "/api/v1/fleet", token=fleet.viewer).json()
    assert data["terminals"] == api["terminals"] == {
        "total": 5, "ok": 1, "warning": 2, "fault": 1, "offline": 1,
    }  # fmt: skip
    assert data["stores"] == api["stores"]
    terminal = json.loads(posmon.ok("--json", "terminal", "T-FAULT"))  # --json before the command
    assert terminal["state"] == "fault" and terminal["spool_backlog"] == 5
    txns = json.loads(posmon.ok("txns", "--json", "--all"))
    assert isinstance(txns, list)
    assert [t["txn_id"] for t in txns] == ["tx-new", "tx-isp", "tx-gw", "tx-rev", "tx-old"]


def test_terminal_answers_a_technicians_questions(posmon: Posmon) -> None:
    out = posmon.ok("terminal", "T-FAULT")
    assert out.startswith("Terminal T-FAULT in store S-1: FAULT")
    assert "spool backlog  5 events waiting to upload" in out
    assert "clock offset   +12.5 ms" in out
    assert "host           cpu 12 %, memory 40 %, disk 55 %" in out
    assert f"in doubt       1 payment — {IN_DOUBT_ACTION}" in out
    (gateway,) = lines_with(section(out, "Probes"), "gateway")
    assert gateway.split()[:5] == ["icmp", "192.168.1.1", "gateway", "-", "FAIL"]
    assert "(9m ago)" in gateway and "100 %" in gateway and gateway.endswith("timeout")
    (printer,) = lines_with(section(out, "Devices"), "printer")
    assert printer.split()[:4] == ["printer", "escpos", "WARNING", "paper_near_end"]
    failures = section(out, "Recent failures (newest first)")
    (isp,) = lines_with(failures, "tx-isp")
    assert "timeout IN DOUBT" in isp and " isp " in isp and "90 %" in isp
    assert "The customer may have been charged" in isp
    # time, txn, ...: "2026-11-22 02:47:20Z (5m ago) tx-isp ..."
    assert [row[4] for row in table_rows(failures)] == ["tx-isp", "tx-gw", "tx-old"]
    assert "\n\n1 payment IN DOUBT above. " + IN_DOUBT_ACTION + "\n\nOpen incidents" in out
    incidents = section(out + "\n\n", "Open incidents")
    assert "Store S-1: internet connection down" in incidents
    assert "acquirer ACQ-B" not in incidents  # closed


def test_unknown_terminal_exits_1_with_the_apis_message(posmon: Posmon) -> None:
    code, out, err = posmon("terminal", "T-NOPE")
    assert (code, out) == (1, "")
    assert err.startswith("posmon: error: not found:") and "T-NOPE" in err


def test_txns_are_failed_ones_by_default_with_cause_and_in_doubt_flag(posmon: Posmon) -> None:
    out = posmon.ok("txns")
    assert out.split()[:4] == ["TIME", "TERMINAL", "STORE", "TXN"]
    # "2026-11-22 02:47:20Z T-FAULT S-1 tx-isp ...", newest first
    assert [row[4] for row in table_rows(out)] == ["tx-new", "tx-isp", "tx-gw", "tx-rev", "tx-old"]
    assert [row[3] for row in table_rows(out)] == ["S-2", "S-1", "S-1", "S-2", "S-1"]
    assert "tx-ok" not in out  # approved
    (new,) = lines_with(out, "tx-new")
    assert " pending " in new  # failed, not attributed yet
    (isp,) = lines_with(out, "tx-isp")
    assert "timeout IN DOUBT" in isp and "12.50 EUR" in isp
    (rev,) = lines_with(out, "tx-rev")
    assert "IN DOUBT" not in rev and "(reversed)" in rev
    assert out.rstrip().endswith("1 payment IN DOUBT above. " + IN_DOUBT_ACTION)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--in-doubt"], ["tx-isp"]),
        (["--cause", "isp"], ["tx-isp"]),
        (["--terminal", "T-HOST"], ["tx-new", "tx-rev"]),
        (["--store", "S-1", "--since", "1d"], ["tx-isp", "tx-gw"]),
        (["--since", "1h"], ["tx-new", "tx-isp", "tx-gw"]),
        (["--until", "1h"], ["tx-rev", "tx-old"]),
        (["--outcome", "approved"], ["tx-ok"]),
        (["--any-outcome", "--terminal", "T-FAULT"], ["tx-isp", "tx-gw", "tx-ok", "tx-old"]),
        (["--acquirer", "ACQ-NONE"], []),
    ],
)
def test_txns_filters(posmon: Posmon, argv: list[str], expected: list[str]) -> None:
    items = json.loads(posmon.ok("txns", "--json", *argv))
    assert [t["txn_id"] for t in items] == expected
    if not expected:
        assert posmon.ok("txns", *argv).strip() == "(none)"


def test_limit_says_there_is_more_and_all_follows_every_page(posmon: Posmon, fleet: Fleet) -> None:
    code, out, err = posmon("txns", "--limit", "2")
    assert code == 0
    assert [row[4] for row in table_rows(out)] == ["tx-new", "tx-isp"]
    assert "2 shown; there are more" in err
    code, out, err = posmon("txns", "--all")
    assert code == 0 and err == ""
    # the client follows next_cursor: pages of 2 give the same 5 payments as one page
    client = Client(fleet.url, fleet.viewer, page_size=2)
    paged, more = client.items("/api/v1/transactions", {"failed": "true"}, limit=None)
    assert not more
    assert [t["txn_id"] for t in paged] == ["tx-new", "tx-isp", "tx-gw", "tx-rev", "tx-old"]
    three, more = client.items("/api/v1/transactions", {"failed": "true"}, limit=3)
    assert [t["txn_id"] for t in three] == ["tx-new", "tx-isp", "tx-gw"] and more


def test_incidents_open_closed_all_and_one(posmon: Posmon) -> None:
    def ids(*argv: str) -> list[int]:
        return [i["id"] for i in json.loads(posmon.ok("incidents", "--json", *argv))]

    assert sorted(ids()) == [1, 2]
    assert ids("--closed") == [3]
    assert sorted(ids("--all")) == [1, 2, 3]
    assert ids("--all", "--cause", "acquirer_outage") == [3]
    assert ids("--kind", "health") == [2]
    out = posmon.ok("incidents")
    (row,) = lines_with(out, "isp")
    assert row.split()[:3] == ["1", "OPEN", row.split()[2]] and "store S-1" in row
    assert "T-WARN printer" in out
    one = posmon.ok("incident", "1")
    assert one.startswith("Incident 1: Store S-1: internet connection down")
    assert "terminals      T-FAULT" in one and "in doubt       1 payment — " in one
    code, _, err = posmon("incident", "99")
    assert code == 1 and "not found" in err


def test_timeline_and_terminals(posmon: Posmon) -> None:
    out = posmon.ok("timeline", "T-FAULT")
    kinds = [line.split()[2] for line in out.splitlines()[1:]]
    assert kinds == ["probe_window", "host_sample", "agent_event"]  # newest first
    assert "agent-T-FAULT:2" in out
    only = json.loads(posmon.ok("timeline", "T-FAULT", "--kind", "host_sample", "--json"))
    assert [e["event_id"] for e in only] == ["agent-T-FAULT:2"]
    listed = json.loads(posmon.ok("terminals", "--state", "warning", "--json"))
    assert sorted(t["terminal_id"] for t in listed) == ["T-HOST", "T-WARN"]
    (off,) = lines_with(posmon.ok("terminals"), "T-OFF")
    assert "OFFLINE" in off and "(1h ago)" in off


def test_in_doubt_action_with_cause_shows_whole_in_json(posmon: Posmon) -> None:
    (isp,) = json.loads(posmon.ok("txns", "--in-doubt", "--json"))
    assert isp["action"] == IN_DOUBT_ACTION + " " + ISP_ACTION


# --- errors --------------------------------------------------------------------------------


def test_no_url_or_no_token_exits_2(posmon: Posmon, fleet: Fleet) -> None:
    code, out, err = posmon("fleet", env={"POSMON_TOKEN": fleet.viewer})
    assert (code, out) == (2, "") and "--url or set POSMON_URL" in err
    code, out, err = posmon("fleet", env={"POSMON_URL": fleet.url})
    assert (code, out) == (2, "") and "--token or set POSMON_TOKEN" in err and VIEWER_HINT in err
    code, _, err = posmon("fleet", "--url", "ftp://x", env={})
    assert code == 2 and "--url 'ftp://x'" in err


def test_wrong_tokens_say_a_viewer_token_is_needed(posmon: Posmon, fleet: Fleet) -> None:
    code, out, err = posmon("fleet", "--token", "not-a-token")
    assert (code, out) == (1, "")
    assert "refused the token" in err and VIEWER_HINT in err
    code, out, err = posmon("fleet", "--token", fleet.agent)  # an agent token may not read
    assert (code, out) == (1, "")
    assert "may not read" in err and VIEWER_HINT in err


def test_unreachable_collector_exits_1_naming_the_url(posmon: Posmon, fleet: Fleet) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    code, out, err = posmon("fleet", "--url", url, "--timeout", "5")
    assert (code, out) == (1, "")
    assert f"cannot reach the collector at {url}" in err


def test_a_parameter_the_api_refuses_exits_2_naming_the_option(posmon: Posmon) -> None:
    code, out, err = posmon("txns", "--since", "1h", "--until", "2h")
    assert (code, out) == (2, "")
    assert err.startswith("posmon: error: --until: ") and "before since" in err
    code, _, err = posmon("txns", "--store", "S" * 300)
    assert code == 2 and err.startswith("posmon: error: --store: ")


def test_a_bad_when_is_refused_before_any_request(posmon: Posmon) -> None:
    with pytest.raises(SystemExit) as exit_:
        posmon("txns", "--since", "yesterday")
    assert exit_.value.code == 2


def test_every_command_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    commands = ["fleet", "terminals", "terminal", "txns", "incidents", "incident", "timeline"]
    with pytest.raises(SystemExit) as exit_:
        main(["--help"], {})
    assert exit_.value.code == 0
    top = capsys.readouterr().out
    for command in commands:
        assert command in top
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"], {})
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and f"posmon {command}" in text.split("examples:")[1]


def test_the_installed_entry_point_reads_the_environment(fleet: Fleet) -> None:
    env = {**os.environ, "POSMON_URL": fleet.url, "POSMON_TOKEN": fleet.viewer}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "collector.people_cli", "txns", "--in-doubt"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "tx-isp" in done.stdout and "IN DOUBT" in done.stdout
