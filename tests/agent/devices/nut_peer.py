"""NUT's ``nutdrv_qx`` reading a serial port, served by a real ``upsd`` on loopback.

For the Megatec peer test: Debian's ``nut-server`` puts the drivers and the
real ``upsd`` in ``/lib/nut/`` (``/usr/sbin/upsd`` is a wrapper that refuses
to start unless ``/etc/nut/nut.conf`` says a MODE, so it is not used);
``upsc`` comes with ``nut-client``.

Everything lives in the test's directory: ``NUT_CONFPATH`` holds
``ups.conf`` (one section per port, ``protocol = megatec``, ``pollinterval``
and ``pollfreq`` 1 s: the driver then sends Q1 every second, every other
poll being a full one — ups.alarm, beeper, voltages — instead of one in 30),
``upsd.conf`` (``LISTEN 127.0.0.1 <free port>``) and an empty
``upsd.users``; ``NUT_STATEPATH`` holds the driver's socket. Both programs
run in the foreground as children of the test (``-D`` for the driver, whose
debug log then goes to a file; ``-F`` for upsd) with ``-u root`` when we are
root (else as ourselves), and are stopped with SIGKILL.

A port taken between our check and upsd's bind makes upsd exit ("not
listening on …"); it is then started again on another port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

NUT_LIB = Path("/lib/nut")
START_TIMEOUT_S = 20.0
UPSC_TIMEOUT_S = 10.0
ATTEMPTS = 5


def require_nut() -> tuple[Path, Path, str]:
    """nutdrv_qx, upsd and upsc, or skip the test saying what to install."""
    driver, upsd = NUT_LIB / "nutdrv_qx", NUT_LIB / "upsd"
    upsc = shutil.which("upsc")
    if not driver.exists() or not upsd.exists():
        pytest.skip("NUT's nutdrv_qx and upsd are not installed (apt-get install nut-server)")
    if upsc is None:
        pytest.skip("NUT's upsc is not installed (apt-get install nut-client)")
    return driver, upsd, upsc


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _user() -> list[str]:
    name = "root" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    return ["-u", name]


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class NutServer:
    """nutdrv_qx on one of ``ports`` behind upsd on 127.0.0.1:``port``."""

    workdir: Path
    ports: Mapping[str, Path]  # ups.conf section name → serial port
    port: int = 0
    driver: subprocess.Popen[bytes] | None = None
    upsd: subprocess.Popen[bytes] | None = None
    _programs: tuple[Path, Path, str] = field(default_factory=require_nut)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["NUT_CONFPATH"] = str(self.workdir / "conf")
        env["NUT_STATEPATH"] = str(self.workdir / "state")
        return env

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def write_config(self) -> None:
        conf, state = self.workdir / "conf", self.workdir / "state"
        conf.mkdir(parents=True, exist_ok=True)
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        sections = [
            f"[{name}]\n  driver = nutdrv_qx\n  port = {path}\n  protocol = megatec\n"
            "  pollinterval = 1\n  pollfreq = 1\n"
            for name, path in self.ports.items()
        ]
        (conf / "ups.conf").write_text("\n".join(sections))
        (conf / "upsd.users").write_text("")
        for name in ("ups.conf", "upsd.users"):
            (conf / name).chmod(0o600)

    def spawn_driver(self, name: str) -> subprocess.Popen[bytes]:
        """``nutdrv_qx -a name`` in the foreground, its output in ``<name>.log``."""
        with (self.workdir / f"{name}.log").open("wb") as log:
            return subprocess.Popen(
                [str(self._programs[0]), "-a", name, *_user(), "-D"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )

    async def start(self, name: str) -> None:
        """Start the driver for ``name`` and upsd; return when upsc reads a status.

        The simulator answers on this loop, so every wait here yields to it.
        """
        self.write_config()
        self.driver = self.spawn_driver(name)
        socket_path = self.workdir / "state" / f"nutdrv_qx-{name}"
        async with asyncio.timeout(START_TIMEOUT_S):
            while not socket_path.exists():
                if self.driver.poll() is not None:
                    raise RuntimeError(f"nutdrv_qx exited:\n{self.log(name)}")
                await asyncio.sleep(0.05)
        for _ in range(ATTEMPTS):
            self.port = free_tcp_port()
            (self.workdir / "conf" / "upsd.conf").write_text(f"LISTEN 127.0.0.1 {self.port}\n")
            with (self.workdir / "upsd.log").open("wb") as log:
                self.upsd = subprocess.Popen(
                    [str(self._programs[1]), *_user(), "-F"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                )
            async with asyncio.timeout(START_TIMEOUT_S):
                while self.upsd.poll() is None:
                    status = await self.upsc(name, "ups.status")
                    if status not in (None, "WAIT"):
                        return
                    await asyncio.sleep(0.1)
            if "not listening" not in self.log("upsd"):
                break  # failed for another reason than a taken port
        raise RuntimeError(f"upsd did not serve {name}:\n{self.log('upsd')}\n{self.log(name)}")

    async def upsc(self, name: str, var: str | None = None) -> str | None:
        """``upsc name@127.0.0.1:port [var]``'s output, or None when it fails."""
        args = [self._programs[2], f"{name}@127.0.0.1:{self.port}", *([var] if var else [])]
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(UPSC_TIMEOUT_S):
                out, _ = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return out.decode(errors="replace").strip() if proc.returncode == 0 else None

    async def variables(self, name: str) -> dict[str, str]:
        """Every variable upsd has for ``name`` ({} when upsc fails)."""
        out = await self.upsc(name)
        pairs = (line.partition(": ") for line in (out or "").splitlines())
        return {key: value for key, sep, value in pairs if sep}

    def stop(self) -> None:
        """SIGKILL upsd and the driver; safe to call twice."""
        _kill(self.upsd)
        _kill(self.driver)
