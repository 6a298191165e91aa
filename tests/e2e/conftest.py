from collections.abc import Iterator

import pytest

from tests.e2e.agents import kill_leftovers


@pytest.fixture(autouse=True)
def _no_agent_left_behind() -> Iterator[None]:
    """A test that fails half-way must not leave an agent process running."""
    yield
    kill_leftovers()
