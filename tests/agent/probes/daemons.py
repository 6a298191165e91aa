"""Real dnsmasq and chronyd on free loopback ports, for the DNS and NTP probe tests.

Each daemon runs in the foreground as a child of the test process, with its
config, pid file, drift file and log inside the test's ``tmp_path``, on a UDP
port of 127.0.0.1 found by binding port 0.  A port taken between that check
and the daemon's bind makes the daemon exit (dnsmasq: "failed to create
listening socket", chronyd: "Could not open NTP socket" then "Nothing to
do"); the start is then retried on a fresh port.  A daemon counts as started
when it answers a real query, and is always stopped with SIGKILL (the
fixtures stop it in a finalizer).

dnsmasq runs with ``--keep-in-foreground`` (``--no-daemon`` would also mean
debug mode) and ``--user``/``--group`` set to our own, so it drops no
privileges and needs no root.  chronyd runs with ``-x`` (never touch the
clock), ``-d`` (foreground, log to stderr), ``-4``, ``cmdport 0`` and
``bindcmdaddress /`` (no command sockets: without the latter it creates
/run/chrony/chronyd.sock), and ``-u root`` as root or ``-U`` otherwise.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.probes.dns import build_query
from agent.probes.ntp import build_request

START_TIMEOUT_S = 10.0
ATTEMPTS = 5


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require(program: str) -> str:
    """The path of ``program``, or skip the test saying it is not installed."""
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if found is None:
        pytest.skip(f"{program} is not installed (Debian: apt-get install {program})")
    return found


@dataclass
class Daemon:
    """A daemon process listening on ``port`` of 127.0.0.1."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGKILL and reap; safe to call twice."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def _answers(port: int, packet: bytes) -> bool:
    """Whether something on 127.0.0.1:port replies to ``packet`` within a moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.connect(("127.0.0.1", port))
        try:
            sock.send(packet)
            return bool(sock.recv(4096))
        except OSError:  # refused (nothing bound yet) or timeout
            return False


def _start(
    name: str,
    workdir: Path,
    command: Callable[[int], Sequence[str]],
    probe_packet: Callable[[], bytes],
    clash: str,
) -> Daemon:
    """Start ``command(port)`` on a free port until it answers ``probe_packet()``.

    A daemon that exits with ``clash`` in its log could not bind its port:
    it is started again on another one.
    """
    last_log = ""
    for attempt in range(ATTEMPTS):
        port = free_udp_port()
        log_path = workdir / f"{name}-{attempt}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                list(command(port)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        daemon = Daemon(name=name, proc=proc, port=port, log_path=log_path)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if _answers(port, probe_packet()):
                    return daemon
                time.sleep(0.02)
        except BaseException:
            daemon.stop()
            raise
        exited = proc.poll() is not None
        daemon.stop()
        last_log = daemon.log()
        if not exited or clash not in last_log:
            break  # hung, or failed for another reason: retrying will not help
    raise RuntimeError(f"{name} did not start and answer on 127.0.0.1:\n{last_log}")


def _own_user_and_group() -> tuple[str, str]:
    return pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name


def start_dnsmasq(workdir: Path, name: str, args: Sequence[str]) -> Daemon:
    """dnsmasq answering only what ``args`` configure, on 127.0.0.1:<free port>."""
    program = require("dnsmasq")
    user, group = _own_user_and_group()

    def command(port: int) -> list[str]:
        return [
            program,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            f"--port={port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            f"--pid-file={workdir / f'{name}.pid'}",
            f"--user={user}",
            f"--group={group}",
            "--log-queries",
            "--log-facility=-",
            *args,
        ]

    # the readiness query: any answer (even REFUSED) means it is serving
    return _start(
        name,
        workdir,
        command,
        lambda: build_query("ready.invalid", txid=1),
        clash="failed to create listening socket",
    )


def start_chronyd(workdir: Path) -> Daemon:
    """chronyd serving NTP from its local clock (stratum 8) on 127.0.0.1:<free port>."""
    program = require("chronyd")
    privileges = ["-u", "root"] if os.geteuid() == 0 else ["-U"]

    def command(port: int) -> list[str]:
        conf = workdir / f"chrony-{port}.conf"
        conf.write_text(
            "\n".join(
                [
                    f"port {port}",
                    "bindaddress 127.0.0.1",
                    "allow 127.0.0.1",
                    "local stratum 8",
                    "cmdport 0",
                    "bindcmdaddress /",
                    f"pidfile {workdir / f'chronyd-{port}.pid'}",
                    f"driftfile {workdir / 'chronyd.drift'}",
                    "",
                ]
            )
        )
        return [program, "-4", "-x", "-d", *privileges, "-f", str(conf)]

    return _start(
        "chronyd",
        workdir,
        command,
        lambda: build_request(time.time()),
        clash="Could not open NTP socket",
    )


@contextlib.contextmanager
def running(daemon: Daemon) -> Iterator[Daemon]:
    """Stop ``daemon`` on the way out, whatever happened."""
    try:
        yield daemon
    finally:
        daemon.stop()


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A UDP port of 127.0.0.1 held by us for the duration (to make a daemon's bind fail)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
