"""Fixtures for collector tests: a real collector process on a SQLite file in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import CollectorProc, create_token, start_collector


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProc]:
    """A collector of its own for one test; stopped (SIGTERM) at teardown."""
    proc = start_collector(tmp_path / "collector.db")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def shared_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProc]:
    """One collector for a whole module (tests that only look, or clean up after themselves)."""
    proc = start_collector(tmp_path_factory.mktemp("collector") / "collector.db")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def shared_tokens(shared_collector: CollectorProc) -> dict[str, str]:
    """Tokens on ``shared_collector``'s database, created with the real CLI."""
    db = shared_collector.db_path
    return {
        "agent": create_token(db, terminal="T-1", store="S-1"),
        "other_terminal": create_token(db, terminal="T-2", store="S-1"),
        "other_store": create_token(db, terminal="T-1", store="S-9"),
        "viewer": create_token(db, viewer="central-it"),
    }
