"""The common part of every device simulator: a pty pair, a stable path, faults.

A simulator holds the master side of an ``os.openpty()`` pair; the code under
test (our driver, NUT's ``nutdrv_qx``, python-escpos) opens the slave like a
real serial port. The simulator also keeps the slave open itself, so the
master never sees EIO between two clients, and sets it raw.

The slave's name (``/dev/pts/N``) changes every time a pty is made, so the
simulator publishes a symlink — like udev's ``/dev/serial/by-id/…`` — at
``link``: configs and peers use the link. ``unplug`` closes both ends and
removes the link (an open port then fails like a pulled USB adapter);
``replug`` makes a new pair and puts the link back.

A device protocol subclasses :class:`PtySimulator` and implements
:meth:`respond` (bytes in → bytes out, stateful) and :meth:`fault` (a fault
command → a confirmation, or :class:`UnknownCommand`). The common faults are
handled here: ``garbage`` (answer random bytes of the reply's length),
``silence`` (answer nothing), ``unplug``, ``replug`` and ``ok`` (clear every
fault; subclasses clear their own too).

Control: :func:`serve` runs the simulator on an asyncio loop and reads one
command per line from a text stream (stdin for ``posmon-agent simulate``),
answering ``ok <command>`` or ``error <reason>`` on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import tty
from pathlib import Path
from typing import TextIO


class UnknownCommand(ValueError):
    """The fault command is not one this simulator knows."""


class PtySimulator:
    #: Fault commands this simulator knows besides the common ones (for help).
    COMMANDS: tuple[str, ...] = ()
    #: The name shown in messages.
    NAME = "device"

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master: int | None = None
        self.slave: int | None = None
        self.slave_path: str | None = None
        self.garbage = False
        self.silent = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox = bytearray()

    # -- to implement -----------------------------------------------------

    def respond(self, data: bytes) -> bytes:
        """The device's answer to ``data``.

        ``data`` is what one read of the master returned: part of a request,
        one request, or several. Keep a buffer of what is not complete yet
        (``self._inbox`` is there for that; ``unplug`` clears it).
        """
        raise NotImplementedError

    def fault(self, command: str, args: list[str]) -> str:
        """Apply a device-specific fault command; return what it did."""
        raise UnknownCommand(command)

    def clear(self) -> None:
        """Clear the device-specific faults (the ``ok`` command)."""

    # -- the pty ----------------------------------------------------------

    def plug(self) -> None:
        if self.master is not None:
            return
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        os.set_blocking(master, False)
        self.master, self.slave = master, slave
        self.slave_path = os.ttyname(slave)
        tmp = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(self.slave_path)
        tmp.replace(self.link)  # atomic: the link never points nowhere
        if self._loop is not None:
            self._loop.add_reader(master, self._on_readable)

    def unplug(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        master, slave = self.master, self.slave
        self.master = self.slave = self.slave_path = None
        if master is not None:
            if self._loop is not None:
                self._loop.remove_reader(master)
            os.close(master)
        if slave is not None:
            os.close(slave)
        self._inbox.clear()

    def _on_readable(self) -> None:
        if self.master is None:
            return
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        except OSError:
            return
        answer = self.respond(data)
        if not answer or self.silent:
            return
        if self.garbage:
            answer = secrets.token_bytes(len(answer))
        with contextlib.suppress(OSError):
            os.write(self.master, answer)

    # -- commands ---------------------------------------------------------

    def command(self, line: str) -> str:
        """Apply one control command line; return the confirmation."""
        words = line.split()
        if not words:
            raise UnknownCommand("empty command")
        name, args = words[0].lower(), words[1:]
        if name == "unplug":
            self.unplug()
            return "unplugged"
        if name == "replug":
            self.plug()
            return f"plugged in at {self.link} -> {self.slave_path}"
        if name == "garbage":
            self.garbage, self.silent = True, False
            return "answering garbage"
        if name == "silence":
            self.silent, self.garbage = True, False
            return "answering nothing"
        if name == "ok":
            self.garbage = self.silent = False
            self.clear()
            return "all faults cleared"
        return self.fault(name, args)

    def help(self) -> str:
        common = ("ok", "garbage", "silence", "unplug", "replug")
        return "commands: " + ", ".join((*self.COMMANDS, *common))


async def serve(sim: PtySimulator, commands: TextIO = sys.stdin, out: TextIO = sys.stdout) -> None:
    """Run ``sim`` until the command stream ends (EOF) or says ``quit``."""
    loop = asyncio.get_running_loop()
    sim._loop = loop
    sim.plug()
    print(f"{sim.NAME} simulator: {sim.link} -> {sim.slave_path}", file=out, flush=True)
    print(sim.help(), file=out, flush=True)
    try:
        while True:
            line = await loop.run_in_executor(None, commands.readline)
            if not line or line.strip() in ("quit", "exit"):
                return
            if not line.strip():
                continue
            if line.strip() == "help":
                print(sim.help(), file=out, flush=True)
                continue
            try:
                print(f"ok {sim.command(line)}", file=out, flush=True)
            except UnknownCommand as err:
                print(f"error unknown command {err}; {sim.help()}", file=out, flush=True)
            except ValueError as err:
                print(f"error {err}", file=out, flush=True)
    finally:
        sim.unplug()
