from collections.abc import Iterator

import pytest

from tests.helpers import STARTED, stop_leftovers


@pytest.fixture(autouse=True)
def _no_collector_left_behind() -> Iterator[None]:
    """A test that fails half-way must not leave a collector process running.

    Collectors of module-scoped fixtures were started before this fixture
    and are left to their owners.
    """
    before = len(STARTED)
    yield
    stop_leftovers(keep=before)
