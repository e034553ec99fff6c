"""Fixtures for the state-store specifications (the databases come from tests.fixtures)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from scepline_shared.store import RequestRepository, session_factory
from scepline_shared.store.store_key import CsrSealer
from tests.shared.store.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def clocked_repository(
    store_engine: AsyncEngine, store_sealer: CsrSealer, clock: FakeClock
) -> RequestRepository:
    return RequestRepository(session_factory(store_engine), sealer=store_sealer, clock=clock)
