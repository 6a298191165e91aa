"""Following a log file on disk: appends, partial lines, rotation by rename and by
copytruncate, a file that appears later, resuming from a stored position."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.logtail.settings import StartAt
from agent.logtail.source import CHUNK, HEAD, Chunk, Follower, Position


def lines_of(chunk: Chunk) -> list[tuple[bytes, int]]:
    """(line, offset after it) for each line of the chunk, as the tailer splits it."""
    out = []
    end = chunk.start
    parts = chunk.data.split(b"\n")
    tail = parts.pop()
    for raw in parts:
        end += len(raw) + 1
        out.append((raw, end))
    if tail:
        end += len(tail)
        out.append((tail, end))
    assert end == chunk.end
    return out


class Reader:
    """A follower and everything it handed out, with the position after each line."""

    def __init__(
        self, path: Path, *, start_at: StartAt = "beginning", position: Position | None = None
    ) -> None:
        self.follower = Follower(path, start_at=start_at, position=position)
        self.positions: list[Position] = []

    def read(self) -> list[bytes]:
        got = []
        while (chunk := self.follower.read()) is not None:
            for raw, end in lines_of(chunk):
                assert (chunk.dev, chunk.ino) == (self.follower.dev, self.follower.ino)
                got.append(raw)
                self.positions.append(self.follower.position_at(end))
        return got

    def close(self) -> None:
        self.follower.close()


def append(path: Path, text: str) -> None:
    with path.open("ab") as f:
        f.write(text.encode())


def numbered(first: int, last: int) -> str:
    return "".join(f"line {i:05d} some text of a realistic length\n" for i in range(first, last))


def names(first: int, last: int) -> list[bytes]:
    return [f"line {i:05d} some text of a realistic length".encode() for i in range(first, last)]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "pos.log"


def test_appends_and_partial_lines(log: Path) -> None:
    log.write_text("one\ntwo\nthr")
    r = Reader(log)
    assert r.read() == [b"one", b"two"]
    assert r.read() == []  # "thr" waits for its newline
    append(log, "ee\nfo")
    assert r.read() == [b"three"]
    append(log, "ur\n")
    assert r.read() == [b"four"]
    assert r.follower.offset == log.stat().st_size
    r.close()


def test_start_at_end_skips_history_and_half_a_line(log: Path) -> None:
    log.write_text("old 1\nold 2\nhalf of a li")
    r = Reader(log, start_at="end")
    assert r.read() == []
    assert r.follower.dirty  # the start position must be stored at once
    append(log, "ne\nnew\n")
    # The half line began before the start: it is history, its end is a line.
    assert r.read() == [b"half of a line", b"new"]
    r.close()


def test_start_at_beginning_reads_history(log: Path) -> None:
    log.write_text("old 1\nold 2\n")
    r = Reader(log, start_at="beginning")
    assert r.read() == [b"old 1", b"old 2"]
    r.close()


def test_missing_file_is_waited_for_and_read_from_its_start(log: Path) -> None:
    r = Reader(log, start_at="end")
    with capture_logs() as logs:
        assert r.read() == []
        assert r.read() == []
        assert r.follower.state == "missing"
        log.write_text("first\nsecond\n")  # created while we watch: all of it is new
        assert r.read() == [b"first", b"second"]
    events = [e["event"] for e in logs]
    assert events.count("logfile_missing") == 1  # logged once, not every poll
    assert "logfile_found" in events
    r.close()


def test_rename_rotation_reads_the_old_file_to_its_end_first(log: Path) -> None:
    writer = log.open("ab", buffering=0)
    writer.write(numbered(0, 100).encode())
    r = Reader(log)
    assert r.read() == names(0, 100)
    writer.write(numbered(100, 150).encode())  # not read yet
    log.rename(log.with_name("pos.log.1"))
    writer.write(numbered(150, 200).encode())  # the writer still has the old file open
    assert r.read() == names(100, 200)
    log.touch()  # logrotate's "create": a new, empty file
    writer.write(numbered(200, 220).encode())  # still the old file (until a HUP)
    assert r.read() == names(200, 220)
    assert r.follower.state == "draining"
    writer.write(b"last line of the old file\n")
    writer.close()
    writer = log.open("ab", buffering=0)  # the writer reopens: new lines go to the new file
    writer.write(numbered(220, 300).encode())
    assert r.read() == [b"last line of the old file", *names(220, 300)]
    assert r.follower.reading == log and r.follower.state == "following"
    assert r.follower.rotations == 1
    writer.write(numbered(300, 310).encode())
    assert r.read() == names(300, 310)
    writer.close()
    r.close()


def test_rename_rotation_unterminated_last_line_of_the_old_file(log: Path) -> None:
    log.write_text("a\nb\nno newline at the end")
    r = Reader(log)
    assert r.read() == [b"a", b"b"]
    log.rename(log.with_name("pos.log.1"))
    log.write_text("c\n")
    assert r.read() == [b"no newline at the end", b"c"]
    r.close()


def test_copytruncate_reads_the_unread_lines_from_the_copy(log: Path) -> None:
    writer = log.open("ab", buffering=0)
    writer.write(numbered(0, 50).encode())
    r = Reader(log)
    assert r.read() == names(0, 50)
    writer.write(numbered(50, 80).encode())  # written, not read yet
    shutil.copyfile(log, log.with_name("pos.log.1"))
    os.truncate(log, 0)
    writer.write(numbered(80, 90).encode())  # O_APPEND: from the new start
    with capture_logs() as logs:
        got = r.read()
    assert got == names(50, 90)
    assert r.follower.truncations == 1
    (event,) = [e for e in logs if e["event"] == "logfile_truncated"]
    assert event["copy"] == str(log.with_name("pos.log.1"))
    writer.write(numbered(90, 95).encode())
    assert r.read() == names(90, 95)
    writer.close()
    r.close()


def test_copytruncate_refilled_past_the_old_offset_is_noticed(log: Path) -> None:
    log.write_text(numbered(0, 10))
    r = Reader(log)
    assert r.read() == names(0, 10)
    shutil.copyfile(log, log.with_name("pos.log-20261121"))
    os.truncate(log, 0)
    # Refilled beyond the old offset before the next look: the size alone cannot tell.
    append(log, "2026-11-21 new content " + "x" * 100 + "\n" + numbered(10, 30))
    assert log.stat().st_size > r.follower.offset
    got = r.read()
    assert got[0].startswith(b"2026-11-21 new content")
    assert got[1:] == names(10, 30)
    r.close()


def test_truncation_without_a_copy_starts_again_at_zero(log: Path) -> None:
    log.write_text(numbered(0, 10))
    r = Reader(log)
    assert r.read() == names(0, 10)
    os.truncate(log, 0)
    append(log, "fresh\n")
    assert r.read() == [b"fresh"]
    r.close()


def test_a_line_longer_than_a_read_is_cut_so_memory_stays_bounded(log: Path) -> None:
    size = CHUNK * 2 + 10
    log.write_bytes(b"x" * size + b"\nnext\n")
    r = Reader(log)
    got = r.read()
    assert got[-1] == b"next"
    assert b"".join(got[:-1]) == b"x" * size  # every byte once, in order
    assert all(len(g) <= 2 * CHUNK for g in got)
    assert r.follower.oversized >= 1
    r.close()


# ── resuming from a stored position ─────────────────────────────────────────


def test_resume_on_the_same_file(log: Path) -> None:
    log.write_text(numbered(0, 10))
    r = Reader(log)
    r.read()
    mid = r.positions[4]
    r.close()
    r2 = Reader(log, start_at="end", position=Position.decode(mid.encode()))
    assert r2.read() == names(5, 10)
    r2.close()


def test_resume_after_a_rename_rotation_while_stopped(log: Path) -> None:
    log.write_text(numbered(0, 10))
    r = Reader(log)
    r.read()
    mid = r.positions[2]
    r.close()
    append(log, numbered(10, 20))
    log.rename(log.with_name("pos.log.1"))
    log.write_text(numbered(20, 25))
    r2 = Reader(log, position=mid)
    assert r2.read() == names(3, 25)
    r2.close()


def test_resume_when_the_rotated_file_is_gone_reads_the_new_one_from_zero(log: Path) -> None:
    log.write_text(numbered(0, 10))
    r = Reader(log)
    r.read()
    pos = r.positions[-1]
    r.close()
    log.unlink()
    log.write_text(numbered(10, 12))
    with capture_logs() as logs:
        r2 = Reader(log, position=pos)
        got = r2.read()
    assert got == names(10, 12)
    # A file system may give the new file the old inode: then the head CRC tells.
    reused = (log.stat().st_dev, log.stat().st_ino) == (pos.dev, pos.ino)
    event = "logfile_truncated" if reused else "logfile_position_lost"
    assert any(e["event"] == event for e in logs)
    r2.close()


def test_resume_after_copytruncate_while_stopped_reads_the_copy(log: Path) -> None:
    log.write_text(numbered(0, 10))
    r = Reader(log)
    r.read()
    pos = r.positions[5]
    r.close()
    shutil.copyfile(log, log.with_name("pos.log.1"))
    os.truncate(log, 0)
    append(log, numbered(10, 13))
    r2 = Reader(log, position=pos)
    assert r2.read() == names(6, 13)
    r2.close()


def test_resume_detects_a_file_refilled_while_stopped(log: Path) -> None:
    """Same inode, longer than the offset, but other content: the head CRC tells."""
    log.write_text(numbered(0, 3))
    r = Reader(log)
    r.read()
    pos = r.positions[-1]
    r.close()
    with log.open("r+b") as f:
        f.truncate(0)
        f.write(("other " + numbered(100, 110)).encode())
    r2 = Reader(log, position=pos)
    assert r2.read()[1:] == names(101, 110)
    r2.close()


def test_position_codec() -> None:
    pos = Position(2049, 1234567, 890, 0xDEADBEEF)
    assert pos.encode() == "2049:1234567:890:deadbeef"
    assert Position.decode(pos.encode()) == pos
    assert Position.decode("1:2:3") == Position(1, 2, 3, -1)  # no head check
    for bad in ("", "1:2", "a:b:c", "1:2:3:zz", "-1:2:3:0", "1:2:3:4:5"):
        assert Position.decode(bad) is None


def test_head_crc_covers_only_the_bytes_read(log: Path) -> None:
    log.write_text("ab\n" + "c" * (HEAD * 2) + "\n")
    r = Reader(log)
    r.read()
    first, second = r.positions
    assert first.head_crc != second.head_crc  # 3 bytes vs HEAD bytes
    r.close()
