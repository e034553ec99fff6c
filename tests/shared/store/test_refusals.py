"""Requests refused before they were recorded: kept where `scepline request
show` finds them, in a ring that a flood of refused messages cannot grow."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from scepline_shared.store import RequestRepository
from scepline_shared.store.models import Refusal
from scepline_shared.store.repository import REFUSALS_KEPT
from tests.shared.store.helpers import T0, FakeClock, count_rows


async def refuse(repository: RequestRepository, transaction_id: str, reason: str) -> None:
    await repository.record_refusal(
        transaction_id=transaction_id, message_type=19, fail_info=0, reason=reason
    )


async def test_a_refusal_is_found_by_its_transaction_id_newest_first(
    clocked_repository: RequestRepository, clock: FakeClock
):
    await refuse(clocked_repository, "tx-des", "content encryption des is not allowed")
    clock.advance(timedelta(seconds=30))
    await refuse(clocked_repository, "tx-other", "signature does not verify")
    await refuse(clocked_repository, "tx-des", "again")

    found = await clocked_repository.refusals("tx-des")

    assert [(r.at, r.reason) for r in found] == [
        (T0 + timedelta(seconds=30), "again"),
        (T0, "content encryption des is not allowed"),
    ]
    assert (found[0].transaction_id, found[0].message_type, found[0].fail_info) == (
        "tx-des",
        19,
        0,
    )
    assert await clocked_repository.refusals("tx-unknown") == []


async def test_what_the_client_controls_is_cut_to_size(repository: RequestRepository):
    await refuse(repository, "t" * 1000, "r" * 10_000)

    [refusal] = await repository.refusals("t" * 255)

    assert len(refusal.reason) == 1000


async def test_a_flood_of_refusals_keeps_only_the_latest(
    repository: RequestRepository, store_engine: AsyncEngine
):
    flood = REFUSALS_KEPT + 250
    for number in range(flood):
        await refuse(repository, f"garbage-{number}", "bad signature")

    kept = await count_rows(store_engine, Refusal)

    assert REFUSALS_KEPT <= kept < REFUSALS_KEPT + 100
    assert await repository.refusals("garbage-0") == []
    assert await repository.refusals(f"garbage-{flood - 1}") != []
    assert await repository.refusals(f"garbage-{flood - REFUSALS_KEPT}") != []
