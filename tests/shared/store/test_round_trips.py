"""What a repository call costs the database.

Round trips are the store's main cost, so the budget is pinned down here: on
PostgreSQL every hot-path call is one statement with no BEGIN/COMMIT around
it (prepared once per connection); on SQLite reads run outside the write lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from sqlalchemy import event, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from scepline_shared.store import (
    CsrSealer,
    NotifyState,
    RequestRepository,
    RequestState,
    create_engine_for,
    seal_legacy_csrs,
    session_factory,
)
from scepline_shared.store.models import ScepRequest
from tests.shared.store.helpers import certificate_record, claim_for, record


class Sent:
    """Every statement and simple query (BEGIN, COMMIT, ...) one connection sends."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def during(self, call: Awaitable[Any]) -> list[str]:
        """The leading keyword of each query `call` sent, in no particular order."""
        self.queries.clear()
        await call
        await asyncio.sleep(0)  # asyncpg hands logged queries over with call_soon
        return sorted(query.split()[0].rstrip(";").upper() for query in self.queries)


@pytest.fixture
async def counted(postgres_url: str) -> AsyncIterator[tuple[AsyncEngine, Sent]]:
    # One connection, so the query logger sees everything the repository sends.
    engine = create_engine_for(postgres_url, pool_size=1, max_overflow=0)
    sent = Sent()

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _statement(*args: Any) -> None:
        sent.queries.append(args[2])

    try:
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            raw.driver_connection.add_query_logger(  # type: ignore[union-attr]
                lambda logged: sent.queries.append(logged.query)
            )
        yield engine, sent
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_the_counter_sees_transactions(counted: tuple[AsyncEngine, Sent]) -> None:
    engine, sent = counted

    async def in_a_transaction() -> None:
        async with engine.begin() as connection:
            await connection.execute(text("SELECT 1"))

    queries = await sent.during(in_a_transaction())
    assert queries == ["BEGIN", "COMMIT", "SELECT"]


@pytest.mark.postgres
async def test_each_call_is_one_statement_without_a_transaction(
    counted: tuple[AsyncEngine, Sent],
) -> None:
    # The counter sees BEGIN/COMMIT (above), so these lists prove there are none.
    engine, sent = counted
    repo = RequestRepository(session_factory(engine), sealer=CsrSealer.generate())
    R = RequestState

    # A change and its history entry (and certificate) go in one WITH statement.
    assert await sent.during(record(repo, "txn-1", queued=True)) == ["WITH"]
    assert await sent.during(repo.get("txn-1")) == ["SELECT"]
    assert await sent.during(repo.mark_queued("txn-1")) == ["UPDATE"]
    validate = repo.transition(
        transaction_id="txn-1", from_state=R.RECEIVED, to_state=R.VALIDATED, detail="ok"
    )
    assert await sent.during(validate) == ["WITH"]
    # The signing claim (with its journal entry), then the certificate: one statement each.
    certificate = certificate_record()
    claim = repo.claim_signature(transaction_id="txn-1", claim=claim_for(certificate))
    assert await sent.during(claim) == ["WITH"]
    issue = repo.record_signed(transaction_id="txn-1", certificate=certificate)
    assert await sent.during(issue) == ["WITH"]
    notify = repo.transition(
        transaction_id="txn-1",
        from_state=R.SIGNED,
        to_state=R.ISSUED,
        detail="ok",
        notify_state=NotifyState.NOT_REQUIRED,
    )
    assert await sent.during(notify) == ["WITH"]
    assert await sent.during(repo.get_certificate("1f2e3d")) == ["SELECT"]
    assert await sent.during(repo.history("txn-1")) == ["SELECT"]
    assert await sent.during(repo.park(transaction_id="txn-1", reason="x")) == ["WITH"]

    # A retransmission: the insert finds the id taken and writes nothing; then a read.
    assert await sent.during(record(repo, "txn-1")) == ["SELECT", "WITH"]
    # A lost compare-and-set writes nothing, in one statement too.
    validate_again = repo.transition(
        transaction_id="txn-1", from_state=R.RECEIVED, to_state=R.VALIDATED, detail="again"
    )
    assert await sent.during(validate_again) == ["WITH"]

    history = [(event.kind, event.to_state) for event in await repo.history("txn-1")]
    assert history == [
        ("state", "RECEIVED"),
        ("state", "VALIDATED"),
        ("state", "SIGNING"),
        ("state", "SIGNED"),
        ("state", "ISSUED"),
        ("park", "ISSUED"),
    ]


@pytest.mark.postgres
async def test_a_start_up_with_nothing_to_seal_costs_two_reads(
    counted: tuple[AsyncEngine, Sent],
) -> None:
    engine, sent = counted
    sealer = CsrSealer.generate()
    repo = RequestRepository(session_factory(engine), sealer=sealer)
    for index in range(3):
        await sent.during(record(repo, f"txn-{index}"))

    # The newest row proves the key, the oldest shows nothing is left in the clear.
    assert await sent.during(seal_legacy_csrs(engine, sealer)) == ["SELECT", "SELECT"]


async def test_sqlite_reads_do_not_wait_for_a_writer(sqlite_url: str) -> None:
    engine = create_engine_for(sqlite_url)
    try:
        repo = RequestRepository(session_factory(engine), sealer=CsrSealer.generate())
        original = (await record(repo, "txn-1")).request
        async with engine.begin() as writer:  # BEGIN IMMEDIATE: holds the write lock
            await writer.execute(update(ScepRequest).values(subject="CN=uncommitted"))
            # Inside BEGIN IMMEDIATE this read would wait out the busy timeout (30 s).
            assert await asyncio.wait_for(repo.get("txn-1"), timeout=5) == original
            assert await asyncio.wait_for(repo.history("txn-1"), timeout=5)
    finally:
        await engine.dispose()


def test_the_repository_needs_an_engine() -> None:
    with pytest.raises(TypeError, match="AsyncEngine"):
        RequestRepository(async_sessionmaker(), sealer=CsrSealer.generate())
