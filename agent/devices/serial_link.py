"""Async serial I/O on the agent's event loop, over pyserial.

:class:`SerialLink` opens a port exclusively (pyserial's ``flock``, the same
lock NUT's drivers take), reads only when the file descriptor is readable
(``loop.add_reader``; nothing blocks the loop) and maps pyserial's and the
OS's exceptions to ours at this one boundary:

- the node does not exist, or reads/writes fail with an I/O error (a USB
  serial adapter pulled out, a pty whose master closed) → :class:`DeviceGone`;
- the port is locked by another process → :class:`DevicePortBusy`;
- no (complete) answer within the timeout → :class:`DeviceSilent`.

After :class:`DeviceGone` the link is closed; the next :meth:`open` finds the
device again when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import termios
from collections.abc import Callable

import serial

from .base import DeviceGone, DevicePortBusy, DeviceSilent

#: ``find(buffer)`` → the length of the first complete frame in it, or None.
FrameFinder = Callable[[bytes], int | None]


class SerialLink:
    def __init__(
        self,
        path: str,
        *,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
    ) -> None:
        self.path = path
        self.baudrate = baudrate
        self.bytesize = bytesize
        self.parity = parity
        self.stopbits = stopbits
        self._port: serial.Serial | None = None
        self._buffer = bytearray()
        self._data = asyncio.Event()
        self._lost: str | None = None

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> None:
        """Open the port exclusively; raises DeviceGone or DevicePortBusy."""
        if self._port is not None:
            return
        if not os.path.exists(self.path):
            raise DeviceGone(f"no such device: {self.path}")
        try:
            port = serial.Serial(
                self.path,
                baudrate=self.baudrate,
                bytesize=self.bytesize,
                parity=self.parity,
                stopbits=self.stopbits,
                timeout=0,
                write_timeout=1.0,
                exclusive=True,
            )
        except serial.SerialException as err:
            raise _map_open_error(self.path, err) from err
        except (OSError, ValueError) as err:
            raise DeviceGone(f"cannot open {self.path}: {err}") from err
        self._port = port
        self._buffer.clear()
        self._lost = None
        asyncio.get_running_loop().add_reader(port.fileno(), self._on_readable)

    def close(self) -> None:
        port, self._port = self._port, None
        if port is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(port.fileno())
        with contextlib.suppress(Exception):
            port.close()

    def _on_readable(self) -> None:
        port = self._port
        if port is None:
            return
        try:
            # The fd is non-blocking and known readable: one read(2), not
            # pyserial's ioctl + select + read for every chunk.
            data = os.read(port.fileno(), 4096)
        except BlockingIOError:
            return
        except (serial.SerialException, OSError) as err:
            self._lost = f"{self.path} went away: {err}"
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(port.fileno())
        else:
            if not data:  # readable with no data: the other end is gone
                self._lost = f"{self.path} went away (no data on a readable port)"
                with contextlib.suppress(Exception):
                    asyncio.get_running_loop().remove_reader(port.fileno())
            self._buffer += data
        self._data.set()

    def pending(self) -> bytes:
        """What has arrived and was not yet taken as a frame."""
        return bytes(self._buffer)

    def discard_input(self) -> None:
        """Forget whatever arrived unasked (a late answer, unsolicited codes),
        including what the OS holds but the loop has not read yet."""
        if self._port is not None:
            try:
                self._port.reset_input_buffer()
            except (serial.SerialException, OSError, termios.error) as err:
                self._lost = f"{self.path} went away: {err}"
        self._buffer.clear()

    async def write(self, data: bytes) -> None:
        port = self._require()
        try:
            port.write(data)
        except (serial.SerialException, OSError) as err:
            self._gone(f"{self.path}: write failed: {err}")

    async def read_frame(self, find: FrameFinder, timeout_s: float) -> bytes:
        """The first complete frame, per ``find``; bytes after it stay buffered."""
        self._require()
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    size = find(bytes(self._buffer))
                    if size is not None:
                        frame = bytes(self._buffer[:size])
                        del self._buffer[:size]
                        return frame
                    if self._lost is not None:
                        self._gone(self._lost)
                    self._data.clear()
                    await self._data.wait()
        except TimeoutError:
            got = bytes(self._buffer)
            raise DeviceSilent(
                "no answer" if not got else f"incomplete answer {got[:40]!r}"
            ) from None

    async def read_exact(self, size: int, timeout_s: float) -> bytes:
        return await self.read_frame(lambda b: size if len(b) >= size else None, timeout_s)

    async def read_until(self, terminator: bytes, timeout_s: float) -> bytes:
        def find(buffer: bytes) -> int | None:
            at = buffer.find(terminator)
            return None if at < 0 else at + len(terminator)

        return await self.read_frame(find, timeout_s)

    def _require(self) -> serial.Serial:
        if self._port is None:
            raise DeviceGone(f"{self.path} is not open")
        if self._lost is not None:
            self._gone(self._lost)
        return self._port

    def _gone(self, reason: str) -> None:
        self.close()
        raise DeviceGone(reason)


def _map_open_error(path: str, err: serial.SerialException) -> Exception:
    text = str(err)
    if "lock" in text.lower():
        return DevicePortBusy(f"{path} is in use by another process")
    code = getattr(err, "errno", None)
    if code in (errno.EBUSY,):
        return DevicePortBusy(f"{path} is in use by another process")
    return DeviceGone(f"cannot open {path}: {text}")
