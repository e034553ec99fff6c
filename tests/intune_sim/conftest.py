from collections.abc import Iterator

import pytest

from tests.intune_sim.fixtures import IntuneSim, intune_sim, intune_sim_server
from tests.intune_sim.helpers import Caller

__all__ = ["caller", "intune_sim", "intune_sim_server"]


@pytest.fixture
def caller(intune_sim: IntuneSim) -> Iterator[Caller]:
    c = Caller(intune_sim)
    yield c
    c.http.close()
