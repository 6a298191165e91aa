"""``python -m agent simulate KIND --link LINK`` as a real process, driven on its stdin.

For the tests that check a driver against the simulator a technician runs,
not the in-process one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


class SimProcess:
    def __init__(self, proc: asyncio.subprocess.Process, link: Path, help_line: str) -> None:
        self.proc = proc
        self.link = link
        self.help = help_line

    async def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):  # a hang guard, not a timing
            return (await self.proc.stdout.readline()).decode().strip()

    async def say(self, command: str) -> str:
        """Send one command line; the simulator's answer ("ok …" / "error …")."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._line(20)

    async def end_input(self) -> int:
        """Close stdin (end of input): the simulator unplugs and exits; its exit status."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        async with asyncio.timeout(20):
            return await self.proc.wait()


@contextlib.asynccontextmanager
async def simulate(kind: str, link: Path) -> AsyncIterator[SimProcess]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "simulate", kind, "--link", str(link),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        sim = SimProcess(proc, link, "")
        banner = await sim._line(30)
        assert banner.startswith(f"{kind} simulator: {link} -> /dev/pts/"), banner
        sim.help = await sim._line(10)
        yield sim
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
