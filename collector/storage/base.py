"""The storage interface every backend implements (SQLite now, PostgreSQL later).

    StorageError(Exception)          the database failed or refused; every
                                     backend maps its driver's exceptions to
                                     this at its boundary (``raise ... from err``)
     └── SchemaTooNewError           the database was written by a newer posmon

Storage is async and owns its own concurrency: callers on the event loop
simply ``await``. :meth:`Storage.ingest` returns only after the report's
events are durable, so the collector never acknowledges what it could lose.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal, Protocol

from protocol import Ack, AgentInfo
from protocol.fastwire import WireReport

TokenKind = Literal["agent", "viewer"]
ID_MAX_LEN = 128


class StorageError(Exception):
    """The database failed or refused an operation."""


class SchemaTooNewError(StorageError):
    """The database's schema is newer than this version of posmon understands."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What a bearer token grants.

    An ``agent`` token writes one terminal's events (``terminal_id`` and
    ``store_id`` set); a ``viewer`` token reads (``name`` set: who holds it).
    """

    kind: TokenKind
    terminal_id: str | None = None
    store_id: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "agent":
            for field, value in (("terminal_id", self.terminal_id), ("store_id", self.store_id)):
                _check_id(field, value)
        elif self.kind == "viewer":
            _check_id("name", self.name)
        else:
            raise ValueError(f"kind: {self.kind!r} is not 'agent' or 'viewer'")

    def describe(self) -> str:
        if self.kind == "agent":
            return f"terminal {self.terminal_id!r} in store {self.store_id!r}"
        return f"viewer {self.name!r}"


def _check_id(field: str, value: str | None) -> None:
    if not value or not value.strip():
        raise ValueError(f"{field}: must not be empty")
    if len(value) > ID_MAX_LEN:
        raise ValueError(f"{field}: longer than {ID_MAX_LEN} characters")


def new_token() -> str:
    """32 random bytes, URL-safe; never starting with "-", which command lines would
    take for an option (``posmon --token -x…``)."""
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def hash_token(token: str) -> str:
    """The key a token is stored under. Tokens are 32 random bytes, so no salt is needed."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def refusal(token: TokenInfo, agent: AgentInfo) -> str | None:
    """Why ``token`` may not upload a report sent by ``agent``, or ``None`` if it may."""
    if token.kind != "agent":
        return f"a {token.kind} token cannot upload reports; use the terminal's agent token"
    mismatches = [
        f"{field} {theirs!r} (token is for {ours!r})"
        for field, ours, theirs in (
            ("terminal_id", token.terminal_id, agent.terminal_id),
            ("store_id", token.store_id, agent.store_id),
        )
        if ours != theirs
    ]
    if mismatches:
        return "report is from " + " and ".join(mismatches) + "; a token writes only its terminal"
    return None


class Storage(Protocol):
    """What the collector needs from a database."""

    async def open(self) -> None:
        """Connect and bring the schema up to date. Raises StorageError."""

    async def close(self) -> None:
        """Finish pending writes and disconnect. Safe to call twice."""

    async def ingest(self, token: TokenInfo, report: WireReport) -> Ack:
        """Store a report's events exactly once, keyed by (agent id, seq).

        Returns only after commit. The ack lists every seq of the report: new
        ones and duplicates already stored are both durable. An empty report
        only refreshes the terminal's ``last_seen``. The caller has checked
        :func:`refusal`; a backend re-checks and raises ``ValueError``.
        """
        ...

    async def create_token(
        self,
        kind: TokenKind,
        *,
        terminal_id: str | None = None,
        store_id: str | None = None,
        name: str | None = None,
    ) -> str:
        """Create a token, store its hash, and return the plaintext (the only time it exists)."""
        ...

    async def lookup_token(self, token: str) -> TokenInfo | None:
        """What a presented token grants, or ``None`` if it is unknown."""
        ...

    async def ping(self) -> None:
        """Raise StorageError unless the database answers."""

    async def event_count(self) -> int:
        """How many events are stored (all terminals)."""
        ...
