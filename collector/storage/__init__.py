"""Where the collector keeps events, terminals and tokens: one interface, one backend per database.

:class:`Storage` is the interface; :func:`storage_for` picks the backend for
a ``--db`` value (SQLite today; PostgreSQL arrives as a second implementation).
"""

from .base import (
    SchemaTooNewError,
    Storage,
    StorageError,
    TokenInfo,
    TokenKind,
    hash_token,
    refusal,
)
from .sqlite import SqliteStorage


def storage_for(db: str) -> Storage:
    """The backend for a validated ``db`` setting (see :mod:`collector.settings`)."""
    return SqliteStorage(db)


__all__ = [
    "SchemaTooNewError",
    "SqliteStorage",
    "Storage",
    "StorageError",
    "TokenInfo",
    "TokenKind",
    "hash_token",
    "refusal",
    "storage_for",
]
