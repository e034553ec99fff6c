"""Fixtures for the Intune tests: the simulator, and the product on both deployments."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scepline_shared.settings import Settings
from tests.fixtures.scepline import DEPLOYMENTS, data_dir_with_ca, deployment
from tests.intune.support import intune_settings
from tests.intune_sim.fixtures import IntuneSim, intune_sim, intune_sim_server

__all__ = ["deployment_settings", "intune_sim", "intune_sim_server"]


@pytest.fixture(params=DEPLOYMENTS)
async def deployment_settings(
    request: pytest.FixtureRequest, tmp_path: Path, lab_ca_dir: Path, intune_sim: IntuneSim
) -> AsyncIterator[Settings]:
    """The product with the Intune provider on the simulator, as in
    ``tests/integration/test_pipeline.py``: in-process broker + SQLite, then
    RabbitMQ + PostgreSQL."""
    base = {
        "data_dir": data_dir_with_ca(tmp_path, lab_ca_dir),
        "sync_wait_seconds": 10,
        "retry_max_attempts": 2,
        "retry_base_delay_seconds": 0.05,
        **intune_settings(intune_sim),
    }
    async with deployment(request.param, request, **base) as settings:
        yield settings
