"""record_request and get: one row per transaction id, whoever races."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from scepline_shared.store import NotifyState, RequestRepository, RequestState
from scepline_shared.store.models import RequestEvent, ScepRequest
from tests.shared.store.helpers import FakeClock, count_rows, key_id, record


async def test_a_new_request_starts_received(repository: RequestRepository) -> None:
    result = await record(repository, "txn-1", renewal_of_serial="00AB")

    assert result.created
    request = result.request
    assert request.transaction_id == "txn-1"
    assert request.state is RequestState.RECEIVED
    assert request.notify_state is NotifyState.NONE
    assert (request.version, request.attempts, request.queued_at) == (1, 0, None)
    assert request.renewal_of_serial == "ab"
    assert request.created_at.tzinfo is UTC
    assert request.created_at == request.updated_at
    assert not request.is_terminal
    assert await repository.get("txn-1") == request


async def test_recording_again_returns_the_original(repository: RequestRepository) -> None:
    first = await record(repository, "txn-1")
    again = await record(repository, "txn-1", signer_key_id=key_id("someone else"), csr_der=b"x")

    assert not again.created
    assert again.request == first.request
    # The caller compares keys: the stored one is the original requester's.
    assert again.request.signer_key_id == key_id()


async def test_transaction_ids_are_case_sensitive(repository: RequestRepository) -> None:
    assert (await record(repository, "abc")).created
    assert (await record(repository, "ABC")).created
    assert (await repository.get("abc")) != (await repository.get("ABC"))


async def test_get_unknown_is_none(repository: RequestRepository) -> None:
    assert await repository.get("nope") is None


async def test_concurrent_records_of_one_transaction_make_one_row(
    repository: RequestRepository, store_engine: AsyncEngine
) -> None:
    results = await asyncio.gather(*(record(repository, "txn-race") for _ in range(10)))

    assert sum(result.created for result in results) == 1
    assert len({result.request.id for result in results}) == 1
    assert await count_rows(store_engine, ScepRequest) == 1
    assert await count_rows(store_engine, RequestEvent) == 1


async def test_recording_writes_the_first_history_entry(repository: RequestRepository) -> None:
    await record(repository, "txn-1")

    [event] = await repository.history("txn-1")
    assert (event.kind, event.from_state, event.to_state) == ("state", None, "RECEIVED")


@pytest.mark.parametrize(
    "overrides",
    [
        {"transaction_id": ""},
        {"transaction_id": "x" * 256},
        {"message_type": 20},
        {"signer_key_id": "ABCDEF" + "0" * 58},
        {"signer_key_id": "abc"},
        {"renewal_of_serial": "not hex"},
    ],
    ids=["empty-id", "long-id", "getcertinitial", "uppercase-key", "short-key", "bad-serial"],
)
async def test_bad_input_is_refused(
    repository: RequestRepository, overrides: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        await record(repository, **{"transaction_id": "txn-1", **overrides})


async def test_recording_as_queued_stamps_the_hand_over(
    clocked_repository: RequestRepository, clock: FakeClock
) -> None:
    # What record_request + mark_queued did, in one write.
    result = await record(clocked_repository, "txn-1", queued=True)

    assert result.created
    assert (result.request.queued_at, result.request.attempts) == (clock.now, 1)
    assert await clocked_repository.get("txn-1") == result.request


async def test_recording_again_as_queued_leaves_the_original_alone(
    clocked_repository: RequestRepository, clock: FakeClock
) -> None:
    first = await record(clocked_repository, "txn-1")
    clock.advance(timedelta(minutes=1))

    again = await record(clocked_repository, "txn-1", queued=True)

    assert not again.created
    assert again.request == first.request
    assert (again.request.queued_at, again.request.attempts) == (None, 0)


async def test_a_retransmission_writes_no_history(
    repository: RequestRepository, store_engine: AsyncEngine
) -> None:
    await record(repository, "txn-1")
    await asyncio.gather(*(record(repository, "txn-1") for _ in range(3)))

    assert await count_rows(store_engine, RequestEvent) == 1
