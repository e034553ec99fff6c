"""Hot statements on PostgreSQL run on the asyncpg connection directly (`_sql.py`).

They must behave as SQLAlchemy's execution would: the same values in and out,
SQLAlchemy's errors, and a pool that survives a statement cancelled midway.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from scepline_shared.store import (
    CsrSealer,
    NotifyState,
    RequestRepository,
    RequestState,
    create_engine_for,
    session_factory,
)
from scepline_shared.store._sql import reusable
from scepline_shared.store.repository import _MARK_QUEUED
from tests.shared.store.helpers import record

pytestmark = pytest.mark.postgres

_SLEEP = reusable(text("SELECT pg_sleep(3)"))
_FAIL = reusable(text("SELECT 1 / 0"))


async def test_views_come_back_typed_as_through_sqlalchemy(postgres_url: str) -> None:
    engine = create_engine_for(postgres_url)
    try:
        repo = RequestRepository(session_factory(engine), sealer=CsrSealer.generate())
        created = (await record(repo, "txn-1", queued=True)).request
        read = await repo.get("txn-1")
        assert read == created
        assert read is not None
        assert type(read.state) is RequestState and type(read.notify_state) is NotifyState
        assert read.created_at.tzinfo is not None
        assert read.created_at.utcoffset() == UTC.utcoffset(None)
        assert isinstance(read.csr_der, bytes)
        # The raw path keeps the column types' own checks on bound values.
        with pytest.raises(ValueError, match="naive"):
            await repo._db.rowcount(
                _MARK_QUEUED,
                {"set_queued_at": datetime(2026, 1, 1), "where_transaction_id": "txn-1"},
            )
    finally:
        await engine.dispose()


async def test_a_cancelled_statement_does_not_poison_the_pool(postgres_url: str) -> None:
    engine = create_engine_for(postgres_url, pool_size=1, max_overflow=0, pool_timeout=5)
    try:
        repo = RequestRepository(session_factory(engine), sealer=CsrSealer.generate())
        await record(repo, "txn-1")
        sleeping = asyncio.create_task(repo._db.fetch_one(_SLEEP))
        await asyncio.sleep(0.3)
        sleeping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeping
        # The only connection was dropped, not handed out mid-statement.
        view = await asyncio.wait_for(repo.get("txn-1"), 5)
        assert view is not None and view.transaction_id == "txn-1"
    finally:
        await engine.dispose()


async def test_a_failing_statement_raises_sqlalchemys_error_and_keeps_the_connection(
    postgres_url: str,
) -> None:
    engine = create_engine_for(postgres_url, pool_size=1, max_overflow=0, pool_timeout=5)
    try:
        repo = RequestRepository(session_factory(engine), sealer=CsrSealer.generate())
        with pytest.raises(DatabaseError):
            await repo._db.fetch_one(_FAIL)
        assert await repo.get("nothing") is None
    finally:
        await engine.dispose()
