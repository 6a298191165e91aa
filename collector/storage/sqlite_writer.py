"""One thread that owns a sqlite3 connection, with group commit.

sqlite3 blocks, so none of it runs on the event loop. Every database
operation is a job on a queue served by one dedicated thread that owns the
only connection:

- a *write* job is a function run inside a transaction. The thread takes all
  the write jobs waiting in the queue (up to ``max_group``), runs them in ONE
  transaction, commits once, and only then resolves each caller's future.
  With ``synchronous=FULL`` a commit costs an fsync; sharing it between the
  reports that arrived meanwhile is what makes ingest fast. If any job of a
  group fails, the group is rolled back and its jobs are re-run one
  transaction each, so a bad job fails alone and the others still commit.
- a *read* job is a function run outside any transaction.

``sqlite3.Error`` becomes :class:`StorageError` here, the one boundary; any
other exception reaches the caller unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .base import StorageError

T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT_S = 10.0
DEFAULT_MAX_GROUP = 64


@dataclass(slots=True)
class _Job(Generic[T]):
    fn: Callable[[sqlite3.Connection], T]
    write: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]


@dataclass(slots=True)
class _Stop:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


def _storage_error(err: BaseException, path: str) -> BaseException:
    if isinstance(err, sqlite3.Error):
        mapped = StorageError(f"database {path}: {err}")
        mapped.__cause__ = err
        return mapped
    return err


def _resolve(
    job: _Job[Any] | _Stop, result: Any = None, error: BaseException | None = None
) -> None:
    """Hand a result to the caller's event loop (if the caller is still waiting)."""

    def settle() -> None:
        if job.future.done():  # the caller was cancelled; the work is done anyway
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        job.loop.call_soon_threadsafe(settle)


def connect(path: str, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A connection configured for durable ingest: WAL, ``synchronous=FULL``, busy timeout.

    Autocommit mode (``isolation_level=None``): transactions are explicit.
    Raises ``sqlite3.Error``.
    """
    conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL journal mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


class SqliteWriter:
    """The thread and queue in front of one SQLite database file."""

    def __init__(
        self,
        path: str,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        max_group: int = DEFAULT_MAX_GROUP,
    ) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._max_group = max_group
        self._queue: queue.SimpleQueue[_Job[Any] | _Stop] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._accepting = False
        #: how many transactions committed and how many write jobs they held
        #: (read by tests and benchmarks to see group commit at work)
        self.commits = 0
        self.grouped_jobs = 0

    @property
    def pending(self) -> int:
        """Jobs queued and not yet taken by the thread (approximate, like ``qsize``)."""
        return self._queue.qsize()

    async def start(self, setup: Callable[[sqlite3.Connection], T]) -> T:
        """Start the thread, open the database and run ``setup`` (e.g. migrations) in it."""
        if self._thread is not None:
            raise RuntimeError("writer already started")
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[T] = loop.create_future()
        self._thread = threading.Thread(
            target=self._main,
            args=(_Job(setup, write=False, loop=loop, future=ready),),
            name="posmon-sqlite-writer",
            daemon=True,
        )
        self._thread.start()
        result = await ready
        self._accepting = True
        return result

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in the writer thread, outside a transaction."""
        return await self._submit(fn, write=False)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in a transaction; returns after that transaction committed."""
        return await self._submit(fn, write=True)

    async def stop(self) -> None:
        """Finish the jobs already queued, close the connection, end the thread."""
        thread = self._thread
        if thread is None or not self._accepting:
            return
        self._accepting = False
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Stop(loop, done))
        await done
        await asyncio.to_thread(thread.join)

    async def _submit(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        if not self._accepting:
            raise StorageError(f"database {self.path} is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, write=write, loop=loop, future=future))
        return await future

    # --- the thread ----------------------------------------------------------------------

    def _main(self, setup: _Job[Any]) -> None:
        try:
            conn = connect(self.path, busy_timeout_s=self._busy_timeout_s)
        except Exception as err:
            _resolve(setup, error=_storage_error(err, self.path))
            return
        try:
            try:
                result = setup.fn(conn)
            except Exception as err:
                _resolve(setup, error=_storage_error(err, self.path))
                return
            _resolve(setup, result)
            self._serve(conn)
        finally:
            self._accepting = False
            conn.close()
            self._fail_leftovers()

    def _serve(self, conn: sqlite3.Connection) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._max_group:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            i = 0
            while i < len(batch):
                job = batch[i]
                if isinstance(job, _Stop):
                    # _main's cleanup closes the connection, then resolves the stop (and
                    # fails anything queued after it, which _submit prevents anyway)
                    for rest in batch[i:]:
                        self._queue.put(rest)
                    return
                if not job.write:
                    self._run_read(conn, job)
                    i += 1
                    continue
                group: list[_Job[Any]] = []
                while i < len(batch):
                    nxt = batch[i]
                    if not isinstance(nxt, _Job) or not nxt.write:
                        break
                    group.append(nxt)
                    i += 1
                self._run_group(conn, group)

    def _run_read(self, conn: sqlite3.Connection, job: _Job[Any]) -> None:
        try:
            result = job.fn(conn)
        except Exception as err:
            _resolve(job, error=_storage_error(err, self.path))
        else:
            _resolve(job, result)

    def _run_group(self, conn: sqlite3.Connection, group: list[_Job[Any]]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [job.fn(conn) for job in group]
            conn.execute("COMMIT")
        except Exception as err:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the original error is the one to report
            if len(group) == 1:
                _resolve(group[0], error=_storage_error(err, self.path))
            else:  # isolate the failing job: the others still deserve their commit
                for job in group:
                    self._run_group(conn, [job])
            return
        self.commits += 1
        self.grouped_jobs += len(group)
        for job, result in zip(group, results, strict=True):
            _resolve(job, result)

    def _fail_leftovers(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, _Job):
                _resolve(job, error=StorageError(f"database {self.path} was closed"))
            else:
                _resolve(job)
