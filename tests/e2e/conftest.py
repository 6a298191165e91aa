from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agents import kill_leftovers
from tests.helpers import CollectorProc, start_collector


@pytest.fixture(autouse=True)
def _no_agent_left_behind() -> Iterator[None]:
    """A test that fails half-way must not leave an agent process running."""
    yield
    kill_leftovers()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProc]:
    proc = start_collector(tmp_path / "collector.db")
    yield proc
    proc.stop()
