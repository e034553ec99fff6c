"""The request state machine: compare-and-set moves, history, sweeping."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from itertools import product

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from scepline_shared.store import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATES,
    IllegalTransition,
    NotifyState,
    RequestRepository,
    RequestState,
    RequestView,
)
from scepline_shared.store.models import RequestEvent
from tests.shared.store.helpers import (
    FakeClock,
    certificate_record,
    claim_for,
    count_rows,
    present,
    record,
    validated,
)

R = RequestState


async def move(
    repository: RequestRepository, source: RequestState, target: RequestState, **fields: object
) -> RequestView | None:
    return await repository.transition(
        transaction_id="txn-1", from_state=source, to_state=target, detail="test", **fields
    )


async def test_happy_path_bumps_version_and_time(
    clocked_repository: RequestRepository, clock: FakeClock
) -> None:
    created = (await record(clocked_repository)).request
    certificate = certificate_record()
    steps = [
        (R.VALIDATED, lambda: move(clocked_repository, R.RECEIVED, R.VALIDATED)),
        (
            R.SIGNING,
            lambda: clocked_repository.claim_signature(
                transaction_id="txn-1", claim=claim_for(certificate)
            ),
        ),
        (
            R.SIGNED,
            lambda: clocked_repository.record_signed(
                transaction_id="txn-1", certificate=certificate
            ),
        ),
        (R.ISSUED, lambda: move(clocked_repository, R.SIGNED, R.ISSUED)),
    ]
    for version, (target, step) in enumerate(steps, start=2):
        clock.advance(timedelta(seconds=1))
        view = await step()
        assert view is not None
        assert (view.state, view.version, view.updated_at) == (target, version, clock.now)
        assert view.created_at == created.created_at
    assert present(view).is_terminal


async def test_signing_moves_only_go_through_their_own_methods(
    repository: RequestRepository,
) -> None:
    """A claim writes the journal entry, a recorded certificate its row: a plain
    transition into or out of SIGNING would skip them."""
    await validated(repository)
    for source, target in [(R.VALIDATED, R.SIGNING), (R.SIGNING, R.SIGNED), (R.SIGNING, R.FAILED)]:
        with pytest.raises(IllegalTransition, match="claim_signature"):
            await move(repository, source, target)
    assert present(await repository.get("txn-1")).state is R.VALIDATED


async def test_wrong_from_state_changes_nothing(
    repository: RequestRepository, store_engine: AsyncEngine
) -> None:
    before = await validated(repository)

    assert await move(repository, R.RECEIVED, R.REJECTED) is None
    assert await repository.get("txn-1") == before
    assert await count_rows(store_engine, RequestEvent) == 2


async def test_unknown_transaction_is_none(repository: RequestRepository) -> None:
    assert await move(repository, R.RECEIVED, R.VALIDATED) is None


async def test_moves_outside_the_table_are_refused(repository: RequestRepository) -> None:
    await record(repository)
    illegal = [
        (source, target)
        for source, target in product(RequestState, RequestState)
        if target not in ALLOWED_TRANSITIONS[source]
    ]
    assert (R.RECEIVED, R.SIGNED) in illegal
    assert all((terminal, R.RECEIVED) in illegal for terminal in TERMINAL_STATES)
    for source, target in illegal:
        with pytest.raises(IllegalTransition) as caught:
            await move(repository, source, target)
        assert (caught.value.from_state, caught.value.to_state) == (source, target)
        assert isinstance(caught.value, ValueError)
    assert present(await repository.get("txn-1")).version == 1


async def test_terminal_states_have_no_exit() -> None:
    assert all(not ALLOWED_TRANSITIONS[state] for state in TERMINAL_STATES)


async def test_fields_travel_with_the_move(repository: RequestRepository) -> None:
    await record(repository)
    view = await move(
        repository,
        R.RECEIVED,
        R.REJECTED,
        fail_info=2,
        fail_reason="challenge expired",
        provider_code="ChallengeExpired",
        notify_state=NotifyState.NONE,
    )
    assert view is not None
    assert (view.fail_info, view.fail_reason, view.provider_code) == (
        2,
        "challenge expired",
        "ChallengeExpired",
    )


async def test_unknown_fields_and_bad_fail_info_are_refused(repository: RequestRepository) -> None:
    await record(repository)
    with pytest.raises(TypeError):
        await move(repository, R.RECEIVED, R.FAILED, state="ISSUED")
    with pytest.raises(ValueError):
        await move(repository, R.RECEIVED, R.FAILED, fail_info=9)
    assert present(await repository.get("txn-1")).state is R.RECEIVED


async def test_concurrent_moves_one_winner(
    repository: RequestRepository, store_engine: AsyncEngine
) -> None:
    await record(repository)
    views = await asyncio.gather(*(move(repository, R.RECEIVED, R.VALIDATED) for _ in range(10)))

    winners = [view for view in views if view is not None]
    assert len(winners) == 1
    assert winners[0].version == 2
    assert await count_rows(store_engine, RequestEvent) == 2


async def test_history_lists_every_step_in_order(repository: RequestRepository) -> None:
    await validated(repository)
    await repository.transition(
        transaction_id="txn-1",
        from_state=R.VALIDATED,
        to_state=R.FAILED,
        detail="signer down",
        fail_reason="HSM unavailable",
    )
    await repository.transition_notify(
        transaction_id="txn-1",
        from_state=NotifyState.NONE,
        to_state=NotifyState.SENT,
        detail="intune 200",
    )

    history = await repository.history("txn-1")
    assert [(e.kind, e.from_state, e.to_state, e.detail) for e in history] == [
        ("state", None, "RECEIVED", "recorded"),
        ("state", "RECEIVED", "VALIDATED", "challenge ok"),
        ("state", "VALIDATED", "FAILED", "signer down"),
        ("notify", "NONE", "SENT", "intune 200"),
    ]
    assert await repository.history("unknown") == []


async def test_notify_state_is_compare_and_set(repository: RequestRepository) -> None:
    await record(repository)

    async def notify(source: NotifyState, target: NotifyState) -> RequestView | None:
        return await repository.transition_notify(
            transaction_id="txn-1", from_state=source, to_state=target, detail="x"
        )

    dead = await notify(NotifyState.NONE, NotifyState.DEAD)
    assert dead is not None and dead.notify_state is NotifyState.DEAD and dead.version == 2
    assert await notify(NotifyState.NONE, NotifyState.SENT) is None
    # An operator replays the dead letter.
    replayed = present(await notify(NotifyState.DEAD, NotifyState.SENT))
    assert replayed.notify_state is NotifyState.SENT
    with pytest.raises(IllegalTransition):
        await notify(NotifyState.SENT, NotifyState.DEAD)


async def test_mark_queued_stamps_and_counts(
    clocked_repository: RequestRepository, clock: FakeClock
) -> None:
    await record(clocked_repository)
    assert await clocked_repository.mark_queued("txn-1")
    clock.advance(timedelta(minutes=1))
    assert await clocked_repository.mark_queued("txn-1")

    view = present(await clocked_repository.get("txn-1"))
    assert (view.queued_at, view.attempts, view.version) == (clock.now, 2, 1)
    assert not await clocked_repository.mark_queued("unknown")


async def test_find_stale_returns_forgotten_work_oldest_first(
    clocked_repository: RequestRepository, clock: FakeClock
) -> None:
    repo = clocked_repository
    await record(repo, "never-queued")  # broker was down: created at T0, never queued
    clock.advance(timedelta(minutes=1))
    await record(repo, "queued-long-ago")
    await repo.mark_queued("queued-long-ago")
    await record(repo, "rejected")
    await repo.transition(
        transaction_id="rejected", from_state=R.RECEIVED, to_state=R.REJECTED, detail="no"
    )
    clock.advance(timedelta(minutes=9))
    await record(repo, "just-recorded")  # ingress may still be publishing it
    await record(repo, "just-queued")
    await repo.mark_queued("just-queued")
    clock.advance(timedelta(minutes=1))

    stale = await repo.find_stale(older_than=timedelta(minutes=5), limit=10)
    assert [view.transaction_id for view in stale] == ["never-queued", "queued-long-ago"]
    limited = await repo.find_stale(older_than=timedelta(minutes=5), limit=1)
    assert [view.transaction_id for view in limited] == ["never-queued"]

    # Re-queued by the sweep, it stops being stale.
    await repo.mark_queued("never-queued")
    stale = await repo.find_stale(older_than=timedelta(minutes=5), limit=10)
    assert [view.transaction_id for view in stale] == ["queued-long-ago"]


async def test_parked_requests_are_left_to_the_operator_until_unparked(
    clocked_repository: RequestRepository, clock: FakeClock
) -> None:
    repo = clocked_repository
    await record(repo, "dead-lettered")
    clock.advance(timedelta(minutes=10))
    assert await repo.park(transaction_id="dead-lettered", reason="notify gave up")

    assert await repo.find_stale(older_than=timedelta(minutes=5), limit=10) == []
    assert [view.transaction_id for view in await repo.parked()] == ["dead-lettered"]
    parked = await repo.get("dead-lettered")
    assert parked is not None and parked.parked_at is not None

    assert await repo.unpark(transaction_id="dead-lettered")
    assert await repo.parked() == []
    stale = await repo.find_stale(older_than=timedelta(minutes=5), limit=10)
    assert [view.transaction_id for view in stale] == ["dead-lettered"]
    kinds = [event.kind for event in await repo.history("dead-lettered")]
    assert kinds[-2:] == ["park", "unpark"]
    assert not await repo.park(transaction_id="unknown", reason="x")


async def test_parking_records_the_unchanged_state(repository: RequestRepository) -> None:
    await validated(repository)
    assert await repository.park(transaction_id="txn-1", reason="validate gave up")
    assert await repository.unpark(transaction_id="txn-1")

    park, unpark = (await repository.history("txn-1"))[-2:]
    assert (park.kind, park.from_state, park.to_state) == ("park", "VALIDATED", "VALIDATED")
    assert park.detail == "parked: validate gave up"
    assert (unpark.kind, unpark.from_state, unpark.to_state) == ("unpark", "VALIDATED", "VALIDATED")
    assert unpark.detail == "replayed"
    assert present(await repository.get("txn-1")).version == 2


async def test_each_combination_of_fields_is_its_own_statement(
    repository: RequestRepository,
) -> None:
    # Statements are built once per shape; different field sets must not mix.
    for index, fields in enumerate(
        [
            {"fail_info": 2, "fail_reason": "bad"},
            {"fail_reason": "only a reason"},
            {},
            {"provider_code": "p", "notify_state": NotifyState.NOT_REQUIRED},
        ]
    ):
        transaction_id = f"txn-{index}"
        await record(repository, transaction_id)
        view = present(
            await repository.transition(
                transaction_id=transaction_id,
                from_state=R.RECEIVED,
                to_state=R.REJECTED,
                detail="no",
                **fields,
            )
        )
        assert view.fail_info == fields.get("fail_info")
        assert view.fail_reason == fields.get("fail_reason")
        assert view.provider_code == fields.get("provider_code")
        assert view.notify_state == fields.get("notify_state", NotifyState.NONE)
