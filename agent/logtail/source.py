"""Following one log file by its path, across rotations: complete lines out.

:class:`Follower` polls with ``stat()`` (portable, no inotify) and hands out
:class:`Chunk`\\ s of complete lines with their byte offsets. It knows the
file it reads by device and inode, and recognises

- **rotation by rename** (the path now names another inode, or nothing): the
  old file stays open and is read to its end — a writer may go on appending
  to it until it reopens its log — and the follower moves to the new file,
  from offset 0, once the new file holds data and the old one holds no more;
- **truncation** (copytruncate): the file is shorter than what was read, or
  its first bytes changed (truncated and refilled between two looks). The
  copy that logrotate made (a sibling whose name starts with the file's name
  and whose first bytes are the ones read before) is read from the old
  offset to its end first, then the live file from 0. Without such a copy
  the live file is read from 0: what was written between the last look and
  the truncation is gone, as for every reader of copytruncate'd logs;
- **a missing file**: waited for, not an error.

A :class:`Position` — device, inode, byte offset, and a CRC of the file's
first bytes — is what the caller stores after each line it has processed;
:class:`Follower` resumes from it. If the path no longer names that inode
(rotated while the agent was stopped), the rotated file is looked up among
the path's siblings by inode and read to its end first; if it is gone, the
file at the path is read from 0.

An unterminated last line is kept until its newline arrives; it is handed
out as a line only when the follower leaves that file for good.
"""

from __future__ import annotations

import contextlib
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

import structlog

from .settings import StartAt

log = structlog.get_logger("posmon.agent.logtail")

#: Bytes at the start of a file that identify its content (with device and inode).
HEAD = 256
#: Bytes read at a time.
CHUNK = 256 * 1024
#: An unterminated line longer than this is handed out as it is (so memory stays bounded).
MAX_LINE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Position:
    """Where reading resumes: ``<dev>:<inode>:<offset>:<crc32 of the first bytes>``."""

    dev: int
    ino: int
    offset: int
    head_crc: int  # CRC-32 of the file's first min(HEAD, offset) bytes

    def encode(self) -> str:
        return f"{self.dev}:{self.ino}:{self.offset}:{self.head_crc:08x}"

    @classmethod
    def decode(cls, text: str) -> Position | None:
        """The position a checkpoint holds; None if it cannot be read (start afresh)."""
        parts = text.split(":")
        if len(parts) not in (3, 4):
            return None
        try:
            dev, ino, offset = (int(p) for p in parts[:3])
            crc = int(parts[3], 16) if len(parts) == 4 else None
        except ValueError:
            return None
        if min(dev, ino, offset) < 0:
            return None
        if crc is None:  # "<dev>:<inode>:<offset>" without a head check
            crc = -1
        return cls(dev, ino, offset, crc)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes of one file from ``start`` to ``end``: lines ending with ``\\n``.

    The piece after the last ``\\n`` (if any) is one more line: an unterminated
    last line of a file the follower leaves, or a cut overlong line.
    """

    data: bytes
    start: int
    end: int
    dev: int
    ino: int


class Follower:
    """One configured path, followed through rotations. Synchronous; cheap per call."""

    def __init__(self, path: Path, *, start_at: StartAt, position: Position | None) -> None:
        self.path = path
        self.start_at = start_at
        self._resume = position
        self._first = True
        self.fd: int | None = None
        self.reading: Path | None = None  # the file read now (path, or its rotated name)
        self.dev = self.ino = 0
        self.offset = 0  # after the last line handed out
        self._read_pos = 0  # bytes read (offset + len(pending))
        self._pending = b""
        self._head = b""  # the file's first min(HEAD, bytes read) bytes
        self._head_crc: int | None = None
        self._static = False  # a copy left by copytruncate: read to its end, then leave
        self._rotated = False  # the path no longer names this file
        self._leave = False  # the last chunk of this file was handed out: switch next time
        self.state = "starting"
        self.rotations = 0
        self.truncations = 0
        self.oversized = 0
        #: A position the caller should store now even without a line (after a start).
        self.dirty = False
        self._noted: str | None = None

    # -- what the caller stores -------------------------------------------

    def position_at(self, offset: int) -> Position:
        """The position after a line ending at ``offset`` of the current file."""
        return Position(self.dev, self.ino, offset, self._crc(min(HEAD, offset)))

    def position(self) -> Position:
        return self.position_at(self.offset)

    def _crc(self, n: int) -> int:
        if n >= HEAD and len(self._head) >= HEAD:
            if self._head_crc is None:
                self._head_crc = zlib.crc32(self._head[:HEAD])
            return self._head_crc
        return zlib.crc32(self._head[:n])

    # -- reading ----------------------------------------------------------

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def read(self) -> Chunk | None:
        """The next chunk of complete lines, or None when there is nothing new now."""
        if self.fd is None and not self._open_first():
            return None
        while True:
            assert self.fd is not None
            if self._leave:
                self._switch_to_path()
                if self.fd is None:
                    return None
                continue
            chunk = self._read_more()
            if chunk is not None:
                return chunk
            # At the end of the file for now: has it been rotated?
            if self._static:
                return self._finish_file()
            if not self._check_rotation():
                return None
            # The path names a new file that holds data. A sequential writer has
            # finished the old one: one more read catches its last lines.
            chunk = self._read_more()
            if chunk is not None:
                return chunk
            return self._finish_file()

    def _read_more(self) -> Chunk | None:
        """Read new bytes of the current file; a chunk if a line is complete."""
        fd = self.fd
        assert fd is not None
        while True:
            before = self._read_pos
            try:
                data = os.pread(fd, CHUNK, before)
            except OSError as err:
                self._note("logfile_read_failed", error=str(err))
                return None
            if not self._content_unchanged():
                self._truncated()
                fd = self.fd
                assert fd is not None
                continue
            if not data:
                return None
            self._read_pos += len(data)
            if len(self._head) < HEAD and len(self._head) == before:
                self._head = (self._head + data)[:HEAD]
                self._head_crc = None
            buf = self._pending + data if self._pending else data
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                self._pending = buf
                if len(buf) > MAX_LINE:  # no log line is this long: cut it here
                    self.oversized += 1
                    return self._hand_out(buf, b"")
                continue
            return self._hand_out(buf[:cut], buf[cut:])

    def _hand_out(self, data: bytes, rest: bytes) -> Chunk:
        start = self.offset
        self.offset += len(data)
        self._pending = rest
        self.state = "following" if not self._rotated and not self._static else "draining"
        return Chunk(data, start, self.offset, self.dev, self.ino)

    def _content_unchanged(self) -> bool:
        """Not truncated, and not truncated and refilled, since the last read."""
        assert self.fd is not None
        try:
            size = os.fstat(self.fd).st_size
            if size < self._read_pos:
                return False
            n = len(self._head)
            return n == 0 or os.pread(self.fd, n, 0) == self._head
        except OSError:
            return True  # a read error is reported by the read itself

    def _finish_file(self) -> Chunk | None:
        """Leave the current file: its unterminated last line is a line now."""
        self._leave = True
        if self._pending:
            return self._hand_out(self._pending, b"")
        return self.read()

    # -- rotation -------------------------------------------------------------

    def _check_rotation(self) -> bool:
        """True when the path names another file that has data: time to move on."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        except OSError as err:
            self._note("logfile_unreadable", error=str(err))
            return False
        if st is not None and (st.st_dev, st.st_ino) == (self.dev, self.ino):
            return False
        if not self._rotated:
            self._rotated = True
            self.rotations += 1
            self.state = "draining"
            log.info(
                "logfile_rotated",
                path=str(self.path),
                old_inode=self.ino,
                offset=self.offset,
                new_file=st is not None,
            )
        return st is not None and stat.S_ISREG(st.st_mode) and st.st_size > 0

    def _switch_to_path(self) -> None:
        self.close()
        self._reset()
        self._open_path(start=0)

    def _truncated(self) -> None:
        self.truncations += 1
        copy = self._find_copy(self.offset, zlib.crc32(self._head[: min(HEAD, self.offset)]))
        log.warning(
            "logfile_truncated",
            path=str(self.path),
            offset=self.offset,
            copy=None if copy is None else str(copy),
        )
        if copy is not None and self._open(copy, start=self.offset):
            self._static = True
            return
        # No copy: the file itself, from its start.
        self._pending = b""
        self._read_pos = self.offset = 0
        self._head, self._head_crc = b"", None
        self.dirty = True

    def _find_copy(self, offset: int, crc: int) -> Path | None:
        """A sibling that starts with the bytes we read and holds at least ``offset``."""
        best: tuple[int, Path] | None = None
        for sibling, st in self._siblings():
            if st.st_size < offset or (st.st_dev, st.st_ino) == (self.dev, self.ino):
                continue
            if crc != -1 and _head_crc(sibling, min(HEAD, offset)) != crc:
                continue
            if best is None or st.st_mtime_ns > best[0]:
                best = (st.st_mtime_ns, sibling)
        return None if best is None else best[1]

    def _find_inode(self, dev: int, ino: int) -> Path | None:
        for sibling, st in self._siblings():
            if (st.st_dev, st.st_ino) == (dev, ino):
                return sibling
        return None

    def _siblings(self) -> list[tuple[Path, os.stat_result]]:
        """Regular files next to the path whose names start with its name."""
        prefix = self.path.name
        found = []
        try:
            with os.scandir(self.path.parent) as entries:
                for entry in entries:
                    if entry.name == prefix or not entry.name.startswith(prefix):
                        continue
                    with contextlib.suppress(OSError):
                        st = entry.stat(follow_symlinks=False)
                        if stat.S_ISREG(st.st_mode):
                            found.append((Path(entry.path), st))
        except OSError:
            return []
        return found

    # -- opening ----------------------------------------------------------------

    def _open_first(self) -> bool:
        """The first open: resume from the stored position, or start as configured."""
        if self._resume is not None:
            resumed = self._open_resumed(self._resume)
            if resumed is None:  # cannot be opened now: keep the position, try again
                return False
            self._resume = None
            if resumed:
                self._first = False
                return True
            start = 0  # the position's file is gone: the current one from its start
        elif self._first and self.path.exists():
            start = 0 if self.start_at == "beginning" else -1
        else:
            start = 0  # appeared while the agent ran: all of it is new
        if self._open_path(start=start):
            self._first = False
            return True
        if not self.path.exists():
            self._first = False
        return False

    def _open_resumed(self, pos: Position) -> bool | None:
        """True: resumed; False: the position is lost; None: cannot open now."""
        try:
            st = os.stat(self.path)
        except OSError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == (pos.dev, pos.ino):
            crc, n = pos.head_crc, min(HEAD, pos.offset)
            if st.st_size >= pos.offset and crc in (-1, _head_crc(self.path, n)):
                log.info("logfile_resumed", path=str(self.path), offset=pos.offset)
                return self._open(self.path, start=pos.offset) or None
            # Truncated (or truncated and refilled) while the agent was stopped.
            self.truncations += 1
            copy = self._find_copy(pos.offset, crc) if crc != -1 else None
            log.warning(
                "logfile_truncated",
                path=str(self.path),
                offset=pos.offset,
                copy=None if copy is None else str(copy),
            )
            if copy is not None and self._open(copy, start=pos.offset):
                self._static = True
                return True
            self.dirty = True
            return self._open(self.path, start=0) or None
        rotated = self._find_inode(pos.dev, pos.ino)
        if rotated is not None and pos.head_crc in (-1, _head_crc(rotated, min(HEAD, pos.offset))):
            self.rotations += 1
            log.info(
                "logfile_resumed", path=str(self.path), offset=pos.offset, rotated=str(rotated)
            )
            if not self._open(rotated, start=pos.offset):
                return None
            self._rotated = True
            self.state = "draining"
            return True
        self.dirty = True
        log.warning(
            "logfile_position_lost",
            path=str(self.path),
            offset=pos.offset,
            reason="the file read before the stop is gone; reading the current one from its start",
        )
        return False

    def _open_path(self, *, start: int) -> bool:
        """Open the configured path; ``start`` -1 means at its end (after the last newline)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.state = "missing"
            self._note("logfile_missing", level="info")
            return False
        except OSError as err:
            self.state = "unreadable"
            self._note("logfile_unreadable", error=str(err))
            return False
        if not stat.S_ISREG(st.st_mode):
            self.state = "unreadable"
            self._note("logfile_unreadable", error="not a regular file")
            return False
        if not self._open(self.path, start=start):
            return False
        self.dirty = True
        return True

    def _open(self, file: Path, *, start: int) -> bool:
        try:
            fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as err:
            self.state = "unreadable" if not isinstance(err, FileNotFoundError) else "missing"
            self._note("logfile_unreadable", error=str(err))
            return False
        try:
            st = os.fstat(fd)
            if start < 0:
                start = _after_last_newline(fd, st.st_size)
            head = os.pread(fd, min(HEAD, start), 0) if start else b""
        except OSError as err:
            os.close(fd)
            self._note("logfile_unreadable", error=str(err))
            return False
        self.close()
        self.fd = fd
        self.reading = file
        self.dev, self.ino = st.st_dev, st.st_ino
        self.offset = self._read_pos = start
        self._pending = b""
        self._head = head
        self._head_crc = None
        self.state = "following" if file == self.path else "draining"
        if self._noted is not None:
            log.info("logfile_found", path=str(self.path), reading=str(file), offset=start)
            self._noted = None
        return True

    def _reset(self) -> None:
        self._static = self._rotated = self._leave = False
        self._pending = b""
        self._head, self._head_crc = b"", None

    def _note(self, event: str, *, level: str = "warning", **fields: object) -> None:
        """Log a problem once, until it goes away."""
        if self._noted == event:
            return
        self._noted = event
        getattr(log, level)(event, path=str(self.path), **fields)

    def info(self) -> dict[str, object]:
        return {
            "state": self.state,
            "reading": None if self.reading is None else str(self.reading),
            "inode": self.ino if self.fd is not None else None,
            "offset": self.offset,
            "rotations": self.rotations,
            "truncations": self.truncations,
            "oversized_lines": self.oversized,
        }


def _head_crc(path: Path, n: int) -> int | None:
    try:
        with open(path, "rb") as f:
            data = f.read(n)
    except OSError:
        return None
    return zlib.crc32(data) if len(data) == n else None


def _after_last_newline(fd: int, size: int) -> int:
    """The offset after the file's last complete line (so no half line is read)."""
    pos = size
    while pos > 0:
        n = min(64 * 1024, pos)
        data = os.pread(fd, n, pos - n)
        i = data.rfind(b"\n")
        if i >= 0:
            return pos - n + i + 1
        pos -= n
    return 0
