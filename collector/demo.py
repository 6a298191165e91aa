"""``make demo``: why did these payments fail? A simulated fleet, then one live agent.

Starts a collector on SQLite in a temporary directory. First (unless
``--no-fleet``) it plays the shipped ``mixed`` scenario through the real ingest
API with ``posmon-collector simulate-fleet``: 12 stores × 2 terminals over 3
hours of simulated time, with every kind of fault (ISP down, router down, weak
Wi-Fi, DNS broken, an acquirer outage across several stores, a store that
cannot reach one acquirer, a PIN pad unplugged, a power cut, a skewed clock, a
starved host). It prints how many failed payments the collector named right,
then what the ``posmon`` CLI shows a technician: the incidents, payments in
doubt and one terminal.

Then it creates an agent token,
starts a receipt-printer simulator on a pty and one agent (host samples every
2 s, the default network probes every second in 5-second windows, the
printer polled every second while the demo runs it out of paper and back,
and a small synthetic payment load), and prints
a line a second with what the collector has stored, until Ctrl-C (or
``--seconds N``). Then it stops both and removes the directory.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

AGENT_TOML = """\
[agent]
terminal_id = "T-DEMO-01"
store_id = "S-DEMO"

[collector]
url = "{url}"
token_file = "agent.token"

[spool]
path = "agent-spool.db"

[uplink]
interval_s = 1.0

[host]
interval_s = 2.0

[api]
listen = "127.0.0.1:0"

[synthetic]
rate_per_s = 3.0

[probes]
# the default probes (link, default gateway, collector), faster than in production
interval_s = 1.0
window_s = 5.0

[[device]]
# a receipt printer: the printer simulator on a pty (posmon-agent simulate printer)
name = "receipt"
kind = "escpos_printer"
port = "{printer}"
interval_s = 1.0
"""

#: What the demo does to the printer, one step every FAULT_EVERY_S seconds.
FAULTS = ("paper_near_end", "paper_end", "ok")
FAULT_EVERY_S = 5


def _wait_for_line(
    path: Path, event: str, proc: subprocess.Popen[bytes], timeout: float
) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"demo: process exited early; see {path}:\n{path.read_text()}")
        for line in path.read_text(errors="replace").splitlines():
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("event") == event:
                return data
        time.sleep(0.1)
    raise SystemExit(f"demo: no {event!r} in {path} after {timeout:.0f} s")


def _counts(db_path: Path) -> dict[str, int]:
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2)
        try:
            return dict(db.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
        finally:
            db.close()
    except sqlite3.Error:
        return {}


def _printer_state(db_path: Path) -> str | None:
    """The last device_status the collector stored, in words."""
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2)
        try:
            row = db.execute(
                "SELECT body FROM events WHERE kind = 'device_status' ORDER BY rowid DESC LIMIT 1"
            ).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    if row is None:
        return None
    body = json.loads(row[0])
    reason = f" — {body['reason']}" if body.get("reason") else ""
    return f"{body['state']}{reason}"


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    """Run a posmon command as a user would, showing its output; fail the demo if it fails."""
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    sys.stdout.write(done.stdout)
    if done.returncode != 0:
        raise SystemExit(f"demo: {' '.join(cmd[2:5])} failed ({done.returncode}):\n{done.stderr}")


def _fleet(py: str, url: str, db: Path) -> None:
    """Play the mixed scenario, score it, and show what the CLI tells a technician."""
    print("fleet      posting 3 simulated hours of 12 stores × 2 terminals with every fault")
    print("           kind (posmon-collector simulate-fleet --scenario mixed --score) …")
    _run([py, "-m", "collector", "simulate-fleet", "--url", url, "--db", str(db),
          "--scenario", "mixed", "--seed", "3", "--score", "--quiet"])  # fmt: skip
    out = subprocess.run(
        [py, "-m", "collector", "token", "create", "--db", str(db), "--viewer", "demo"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    env = {**os.environ, "POSMON_URL": url, "POSMON_TOKEN": out.stdout.strip().splitlines()[-1]}
    posmon = [py, "-c", "import sys; from collector.people_cli import main; sys.exit(main())"]
    for title, args in (
        ("incidents (posmon incidents --all)", ["incidents", "--all"]),
        (
            "payments in doubt (posmon txns --in-doubt --limit 5)",
            ["txns", "--in-doubt", "--limit", "5"],
        ),
        ("one terminal (posmon terminal S008-T1)", ["terminal", "S008-T1"]),
    ):
        print(f"\n--- {title}")
        _run([*posmon, *args], env=env)
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0, help="stop after N seconds (0: Ctrl-C)")
    parser.add_argument(
        "--no-fleet", action="store_true", help="skip the simulated fleet; only the live agent"
    )
    args = parser.parse_args(argv)
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="posmon-demo-") as tmp:
        work = Path(tmp)
        db = work / "collector.db"
        procs: list[subprocess.Popen[bytes]] = []
        try:
            log = (work / "collector.log").open("wb")
            collector = subprocess.Popen(
                [py, "-m", "collector", "serve", "--db", str(db), "--listen", "127.0.0.1:0"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            procs.append(collector)
            url = _wait_for_line(work / "collector.log", "collector_listening", collector, 30)[
                "url"
            ]
            print(f"collector  {url}  (SQLite {db})")
            if not args.no_fleet:
                _fleet(py, url, db)
            out = subprocess.run(
                [py, "-m", "collector", "token", "create", "--db", str(db),
                 "--terminal", "T-DEMO-01", "--store", "S-DEMO"],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            token = out.stdout.strip().splitlines()[-1]
            (work / "agent.token").write_text(token + "\n")
            printer_link = work / "printer"
            printer = subprocess.Popen(
                [py, "-m", "agent", "simulate", "printer", "--link", str(printer_link)],
                stdin=subprocess.PIPE, stdout=(work / "printer.log").open("wb"),
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            procs.append(printer)
            deadline = time.monotonic() + 30
            while not printer_link.exists():
                if printer.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"demo: the printer simulator did not start; see {work}")
                time.sleep(0.05)
            print(f"printer    simulated at {printer_link}")
            (work / "agent.toml").write_text(AGENT_TOML.format(url=url, printer=printer_link))
            print("token      created for terminal T-DEMO-01 in store S-DEMO")
            alog = (work / "agent.log").open("wb")
            agent = subprocess.Popen(
                [py, "-m", "agent", "run", "--config", str(work / "agent.toml")],
                stdout=alog, stderr=subprocess.STDOUT,
            )  # fmt: skip
            procs.append(agent)
            _wait_for_line(work / "agent.log", "agent_started", agent, 30)
            print("agent      running (host samples every 2 s, 3 synthetic payments/s,")
            print("           default probes every 1 s in 5 s windows, the printer every 1 s;")
            print(f"           the printer goes {' → '.join(FAULTS)} every {FAULT_EVERY_S} s)")
            print("           Ctrl-C stops the demo and removes", tmp)
            print()
            last = 0
            start = time.monotonic()
            step = 0
            shown: str | None = None
            while not args.seconds or time.monotonic() - start < args.seconds:
                time.sleep(1)
                if time.monotonic() - start >= (step + 1) * FAULT_EVERY_S and printer.stdin:
                    printer.stdin.write(FAULTS[step % len(FAULTS)].encode() + b"\n")
                    printer.stdin.flush()
                    step += 1
                for proc, name in (
                    (collector, "collector"),
                    (agent, "agent"),
                    (printer, "printer"),
                ):
                    if proc.poll() is not None:
                        print(f"demo: the {name} exited ({proc.returncode}); see its log above")
                        return 1
                counts = _counts(db)
                total = sum(counts.values())
                kinds = "  ".join(f"{k} {n}" for k, n in sorted(counts.items()))
                stamp = time.strftime("%H:%M:%S")
                print(
                    f"{stamp}  stored {total:6d} events (+{total - last:<4d})  {kinds}", flush=True
                )
                last = total
                state = _printer_state(db)
                if state is not None and state != shown:
                    print(f"          printer is {state}", flush=True)
                    shown = state
        except KeyboardInterrupt:
            print()
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            print("demo stopped; cleaned up", tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
