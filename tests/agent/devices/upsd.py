"""A real upsd (Debian's nut-server) fed by dummy-ups drivers, on a free port of 127.0.0.1.

Everything lives in the test's directory: ``NUT_CONFPATH`` holds ups.conf
(one ``[name]`` section per UPS, ``driver = dummy-ups``, ``port = <name>.dev``),
upsd.conf (``LISTEN 127.0.0.1 <port>``, optionally ``MAXAGE``) and
upsd.users; ``NUT_STATEPATH`` holds the drivers' sockets (in a short
directory of /tmp instead when the test's is too long for a socket's path).
The programs are
run from /lib/nut directly (``/sbin/upsd`` is Debian's wrapper that refuses
to start unless /etc/nut/nut.conf enables it), in the foreground (``-F``),
with ``-u root`` when we are root (else as ourselves).

What Debian's NUT 2.8.0 does, as these tests rely on it:

- dummy-ups reads a ``*.dev`` file once ("dummy-once"), so each state of a
  UPS is its own UPS section with its own file: no waiting for a change.
- A driver that dies: upsd answers ``ERR DRIVER-NOT-CONNECTED`` within a
  moment (it may first reach the dying driver's socket once more and say
  ``WAIT``), and connects again by itself (within seconds) when the driver
  is back.
- A driver that stops answering (SIGSTOP): upsd keeps serving the last data
  until ``MAXAGE`` seconds passed, then ``ERR DATA-STALE``; if it was stopped
  before its first dump, ``ups.status`` is ``WAIT`` until then.
- upsd SIGSTOPped: the kernel still accepts connections, nothing answers.
- upsd killed and started again: it binds the same port at once.
- A port taken between our check and upsd's bind makes upsd exit with
  "not listening on 127.0.0.1 port N"; it is then started on another port.

Every process is stopped with SIGKILL by :meth:`Upsd.close` (the fixtures
call it in a finalizer), by its pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path

import pytest

NUT_DIRS = (Path("/lib/nut"), Path("/usr/lib/nut"), Path("/usr/libexec/nut"))
START_TIMEOUT_S = 15.0
ATTEMPTS = 5
CLASH = "not listening on 127.0.0.1 port"
#: a longer state directory is made in the system's temporary directory instead
SOCKET_DIR_MAX = 70


def nut_program(name: str) -> str:
    """The path of NUT's ``name`` (a driver or upsd), or skip the test."""
    for directory in NUT_DIRS:
        path = directory / name
        if os.access(path, os.X_OK):
            return str(path)
    pytest.skip(f"NUT's {name} is not installed (Debian: apt-get install nut-server)")


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


class Upsd:
    """upsd and one dummy-ups per UPS; ``upses`` maps each UPS's name to its .dev file."""

    def __init__(
        self,
        workdir: Path,
        upses: Mapping[str, str],
        *,
        users: Mapping[str, str] | None = None,
        maxage_s: int | None = None,
        debug: bool = False,
    ) -> None:
        self.workdir = workdir
        self.conf = workdir / "conf"
        self.conf.mkdir(parents=True, exist_ok=True)
        self.state = workdir / "state"
        self._short_state = len(str(self.state)) > SOCKET_DIR_MAX
        if self._short_state:  # a driver's socket path must fit in sun_path (108 bytes)
            self.state = Path(tempfile.mkdtemp(prefix="upsd-"))
        self.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.upses = dict(upses)
        self.users = dict(users or {})
        self.maxage_s = maxage_s
        self.debug = debug
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.drivers: dict[str, subprocess.Popen[bytes]] = {}
        self.log_path = workdir / "upsd.log"
        self._starts = 0
        self._as_root = ["-u", "root"] if os.geteuid() == 0 else []
        self._write_config()

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "NUT_CONFPATH": str(self.conf), "NUT_STATEPATH": str(self.state)}

    def _write_config(self) -> None:
        sections = []
        for name, dev in self.upses.items():
            path = self.workdir / f"{name}.dev"
            path.write_text(dev)
            sections.append(f'[{name}]\n\tdriver = dummy-ups\n\tport = "{path}"\n')
        (self.conf / "ups.conf").write_text("".join(sections))
        users = []
        for user, password in self.users.items():
            escaped = password.replace("\\", "\\\\").replace('"', '\\"')
            users.append(f'[{user}]\n\tpassword = "{escaped}"\n\tupsmon secondary\n')
        (self.conf / "upsd.users").write_text("".join(users))
        for path in self.conf.iterdir():
            path.chmod(0o600)

    # ── drivers ──────────────────────────────────────────────────────────

    def start_drivers(self, *names: str) -> None:
        """Start dummy-ups for each of ``names`` (at once: each takes a second) and wait."""
        for name in names:
            (self.state / f"dummy-ups-{name}").unlink(missing_ok=True)
            with (self.workdir / f"driver-{name}.log").open("ab") as log:
                self.drivers[name] = subprocess.Popen(
                    [nut_program("dummy-ups"), "-a", name, *self._as_root, "-F"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                )
        deadline = time.monotonic() + START_TIMEOUT_S
        for name in names:
            while not self._driver_listening(name):
                if self.drivers[name].poll() is not None or time.monotonic() > deadline:
                    log_text = (self.workdir / f"driver-{name}.log").read_text(errors="replace")
                    raise RuntimeError(f"dummy-ups {name} did not start:\n{log_text}")
                time.sleep(0.02)

    def _driver_listening(self, name: str) -> bool:
        """Whether the driver's socket takes connections (upsd's, or ours for this check)."""
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(str(self.state / f"dummy-ups-{name}"))
            except OSError:
                return False
            return True

    def kill_driver(self, name: str) -> None:
        _kill(self.drivers.pop(name, None))

    def pause_driver(self, name: str) -> None:
        self.drivers[name].send_signal(signal.SIGSTOP)

    def resume_driver(self, name: str) -> None:
        self.drivers[name].send_signal(signal.SIGCONT)

    # ── upsd ─────────────────────────────────────────────────────────────

    def start(self, *, wait_for: tuple[str, ...] | None = None) -> None:
        """Start upsd (on its old port if it had one) and wait until it serves ``wait_for``.

        ``wait_for`` (default: every UPS whose driver runs) are the UPSes whose
        first data upsd must have (``ups.status`` not WAIT) before we return.
        """
        fixed = self.port != 0
        for _attempt in range(ATTEMPTS):
            self.port = self.port if fixed else free_tcp_port()
            lines = [f"LISTEN 127.0.0.1 {self.port}"]
            if self.maxage_s is not None:
                lines.append(f"MAXAGE {self.maxage_s}")
            (self.conf / "upsd.conf").write_text("\n".join(lines) + "\n")
            self._starts += 1
            marker = f"── start {self._starts} on port {self.port}\n"
            with self.log_path.open("ab") as log:
                log.write(marker.encode())
                log.flush()
                verbosity = ["-DDDDDD"] if self.debug else ["-F"]
                self.proc = subprocess.Popen(
                    [nut_program("upsd"), *self._as_root, *verbosity],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                )
            if self._wait_listening():
                break
            _kill(self.proc)
            if fixed or CLASH not in self.log().rpartition(marker)[2]:
                raise RuntimeError(f"upsd did not start:\n{self.log()}")
        else:
            raise RuntimeError(f"upsd found no free port:\n{self.log()}")
        for name in self.drivers if wait_for is None else wait_for:
            self.wait_until(partial(self.has_data, name), f"upsd has the first data of {name}")

    def _wait_listening(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if self.ask("LIST UPS").startswith("BEGIN LIST UPS"):
                    return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """SIGKILL upsd (its port is kept for the next :meth:`start`)."""
        _kill(self.proc)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Kill upsd and every driver; safe to call twice."""
        _kill(self.proc)
        for name in list(self.drivers):
            self.kill_driver(name)
        if self._short_state:
            shutil.rmtree(self.state, ignore_errors=True)

    # ── talking to it ────────────────────────────────────────────────────

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ask(self, request: str) -> str:
        """upsd's whole answer to one request line, on a new connection."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(request.encode() + b"\n")
            answer = b""
            while True:
                chunk = sock.recv(65536)
                answer += chunk
                done = answer.endswith(b"\n") and (
                    not answer.startswith(b"BEGIN") or b"\nEND LIST" in answer
                )
                if not chunk or done:
                    return answer.decode(errors="replace")

    def status(self, ups: str) -> str | None:
        """``ups.status`` as upsd has it now, or None for an ERR."""
        answer = self.ask(f"GET VAR {ups} ups.status")
        prefix = f"VAR {ups} ups.status "
        return answer.strip()[len(prefix) :].strip('"') if answer.startswith(prefix) else None

    def has_data(self, ups: str) -> bool:
        return self.status(ups) not in (None, "WAIT")

    def wait_until(self, predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
        """Wait for ``predicate()`` (a hang guard: fail after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting until {what}:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running_upsd(
    workdir: Path,
    upses: Mapping[str, str],
    *,
    paused: tuple[str, ...] = (),
    users: Mapping[str, str] | None = None,
    maxage_s: int | None = None,
    debug: bool = False,
) -> Iterator[Upsd]:
    """upsd serving ``upses`` (their drivers started first; ``paused`` ones SIGSTOPped)."""
    upsd = Upsd(workdir, upses, users=users, maxage_s=maxage_s, debug=debug)
    try:
        upsd.start_drivers(*upses)
        for name in paused:
            upsd.pause_driver(name)
        upsd.start(wait_for=tuple(n for n in upses if n not in paused))
        yield upsd
    finally:
        upsd.close()
