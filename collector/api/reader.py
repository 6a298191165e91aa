"""Read-only SQLite connections for the query API, in threads of their own.

Ingest writes through the storage's single writer thread; if the API's reads
queued there too, a slow fleet query would hold up acknowledgements, and a
burst of reports would hold up the dashboard. So the API opens its own
connections with ``mode=ro`` (WAL lets readers run while the writer commits),
one per worker thread, and runs each query in that pool.

``sqlite3.Error`` becomes :class:`~collector.storage.StorageError` here,
the one boundary for these connections; the routes answer 503 for it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from ..storage import StorageError

T = TypeVar("T")

DEFAULT_WORKERS = 4
DEFAULT_BUSY_TIMEOUT_S = 5.0


def _uri(path: str) -> str:
    return "file:" + quote(str(Path(path).resolve())) + "?mode=ro"


class SqliteReader:
    """A small pool of threads, each with its own read-only connection to ``path``."""

    def __init__(
        self,
        path: str,
        *,
        workers: int = DEFAULT_WORKERS,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> None:
        self.path = path
        self._workers = workers
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        if self._pool is not None:
            raise RuntimeError("reader already started")
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="posmon-api-reader")

    async def stop(self) -> None:
        """Wait for running queries, then close every connection."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        await asyncio.to_thread(pool.shutdown, wait=True)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in a reader thread; ``sqlite3.Error`` becomes StorageError."""
        pool = self._pool
        if pool is None:
            raise StorageError(f"database {self.path} is not open for reading")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, self._run, fn)

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in one read transaction: its queries all see the same snapshot."""
        try:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")  # read-only: ends the snapshot
        except sqlite3.Error as err:
            raise StorageError(f"database {self.path}: {err}") from err

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                _uri(self.path),
                uri=True,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,  # closed by stop() from the event loop's thread
            )
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
                conn.execute("PRAGMA query_only = ON")
                conn.row_factory = sqlite3.Row
            except BaseException:
                conn.close()
                raise
            with self._lock:
                self._connections.append(conn)
            self._local.conn = conn
        return conn
