"""Real posmon processes for tests: start a collector, create tokens with its CLI.

Only process helpers live here, so any test package can import them::

    from tests.helpers import start_collector, create_token

    collector = start_collector(tmp_path / "collector.db")
    try:
        token = create_token(collector.db_path, terminal="T-1", store="S-1")
        ...  # talk HTTP to collector.url
    finally:
        collector.stop()
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _pump(stream: IO[str], sink: list[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        sink.append(line)
        lines.put(line)
    lines.put(None)


def json_lines(lines: Sequence[str]) -> list[dict[str, Any]]:
    """The lines that are JSON objects (structlog's output), parsed; others skipped."""
    events = []
    for line in lines:
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            events.append(data)
    return events


@dataclass
class CollectorProc:
    """A running ``python -m collector serve`` and what it printed."""

    url: str
    proc: subprocess.Popen[str]
    db_path: Path
    stdout_lines: list[str] = field(default_factory=list)
    stderr_lines: list[str] = field(default_factory=list)
    _pumps: list[threading.Thread] = field(default_factory=list, repr=False)

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines printed so far."""
        return json_lines(list(self.stdout_lines))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the process (SIGTERM: clean stop; SIGKILL: a crash) and wait for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        for pump in self._pumps:
            pump.join(timeout=STOP_TIMEOUT_S)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)


#: Every collector started, so a failing test cannot leave one behind.
STARTED: list[CollectorProc] = []


def stop_leftovers(keep: int = 0) -> None:
    """Kill the collectors started after the first ``keep`` (wider fixtures own those)."""
    while len(STARTED) > keep:
        STARTED.pop().kill()


def start_collector(db_path: Path | str, extra_args: Sequence[str] = ()) -> CollectorProc:
    """Start a collector on ``127.0.0.1:0`` and return once it is listening.

    Reads the ``collector_listening`` JSON log line from its stdout for the
    URL. Raises ``RuntimeError`` with its output if it exits or says nothing
    in time. The caller must ``stop()`` it.
    """
    args = [
        sys.executable, "-m", "collector", "serve",
        "--db", str(db_path), "--listen", "127.0.0.1:0", "--log-format", "json",
        *extra_args,
    ]  # fmt: skip
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out_lines: list[str] = []
    err_lines: list[str] = []
    lines: queue.Queue[str | None] = queue.Queue()
    ignored: queue.Queue[str | None] = queue.Queue()
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, out_lines, lines), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, err_lines, ignored), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    collector = CollectorProc("", proc, Path(db_path), out_lines, err_lines, pumps)
    STARTED.append(collector)
    try:
        while True:
            line = lines.get(timeout=START_TIMEOUT_S)
            if line is None:
                break
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("event") == "collector_listening":
                collector.url = str(data["url"])
                return collector
    except queue.Empty:
        pass
    collector.kill()
    raise RuntimeError(
        f"collector did not start (exit {proc.returncode}):\n"
        f"stdout:\n{''.join(out_lines)}\nstderr:\n{''.join(err_lines)}"
    )


def run_collector_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``python -m collector ARGS...``, output captured, whatever the exit status."""
    return subprocess.run(
        [sys.executable, "-m", "collector", *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def create_token(
    db_path: Path | str,
    *,
    terminal: str | None = None,
    store: str | None = None,
    viewer: str | None = None,
) -> str:
    """A new token from ``posmon-collector token create``: the last line of its stdout."""
    who = ["--viewer", viewer] if viewer is not None else ["--terminal", str(terminal)]
    if store is not None:
        who += ["--store", store]
    done = run_collector_cli("token", "create", "--db", str(db_path), *who)
    if done.returncode != 0:
        raise RuntimeError(f"token create failed ({done.returncode}): {done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def self_signed_cert(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A throwaway certificate and key for 127.0.0.1 (needs the openssl CLI)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key
