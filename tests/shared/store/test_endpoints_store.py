"""The store's part of SCEP endpoints (docs/endpoints.md): each request and
certificate records its endpoint; one-time challenges work once, whoever races
for them; requests wait for an operator's decision, and the sweep neither
re-queues nor forgets them; migration 0006 keeps the history it copies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from scepline_shared.store import RequestRepository, RequestState, create_engine_for
from scepline_shared.store.challenges import Consumed, challenge_sha256
from scepline_shared.store.migrate import alembic_config, run_locked, upgrade_to_head
from scepline_shared.store.models import Approval
from scepline_shared.store.views import request_key
from tests.shared.store.helpers import (
    T0,
    FakeClock,
    certificate_record,
    present,
    record,
    sign,
)

R = RequestState


async def awaiting(repository: RequestRepository, transaction_id: str, endpoint: str) -> None:
    await record(repository, transaction_id, endpoint=endpoint)
    moved = await repository.transition(
        transaction_id=transaction_id,
        from_state=R.RECEIVED,
        to_state=R.AWAITING_APPROVAL,
        detail="waits for an operator",
    )
    assert moved is not None


async def test_a_request_and_its_certificate_record_their_endpoint(
    repository: RequestRepository,
) -> None:
    created = (await record(repository, "tx-w|at:wifi", endpoint="wifi")).request
    await repository.transition(
        transaction_id="tx-w|at:wifi", from_state=R.RECEIVED, to_state=R.VALIDATED, detail="ok"
    )
    await sign(repository, "tx-w|at:wifi", certificate_record("a1", subject="CN=w"))
    await record(repository, "tx-d")

    certificate = present(await repository.get_certificate("a1"))
    assert created.endpoint == "wifi" and created.scep_transaction_id == "tx-w"
    assert certificate.endpoint == "wifi"
    assert present(await repository.get("tx-d")).endpoint == "default"
    assert [c.serial for c in await repository.find_certificates("", endpoint="wifi")] == ["a1"]
    assert await repository.find_certificates("CN=w", endpoint="servers") == []
    listed = await repository.in_state(R.RECEIVED, endpoint="default")
    assert [r.transaction_id for r in listed] == ["tx-d"]


def test_request_keys_name_renewals_and_endpoints_apart() -> None:
    assert request_key("tx", None, "default") == "tx"
    assert request_key("tx", "ab", "default") == "tx|renew:ab"
    assert request_key("tx", None, "wifi") == "tx|at:wifi"
    assert request_key("tx", "ab", "wifi") == "tx|renew:ab|at:wifi"


async def test_a_client_transaction_id_finds_its_requests_at_every_endpoint(
    repository: RequestRepository,
) -> None:
    await record(repository, "t_1|at:gear", endpoint="gear")
    await record(repository, "t_1")
    await record(repository, "tx1|at:gear", endpoint="gear")  # "_" is no wildcard

    found = await repository.by_client_transaction("t_1")

    assert sorted(r.transaction_id for r in found) == ["t_1", "t_1|at:gear"]


async def test_a_one_time_challenge_works_once(
    clocked_repository: RequestRepository, clock: FakeClock
) -> None:
    digest = challenge_sha256("s3cret")
    await clocked_repository.add_challenges(
        endpoint="servers", hashes=[digest], expires_at=clock.now + timedelta(hours=1)
    )

    first = await clocked_repository.consume_challenge(
        digest=digest, endpoint="servers", transaction_id="tx-1"
    )
    again = await clocked_repository.consume_challenge(
        digest=digest, endpoint="servers", transaction_id="tx-1"
    )
    second = await clocked_repository.consume_challenge(
        digest=digest, endpoint="servers", transaction_id="tx-2"
    )
    elsewhere = await clocked_repository.consume_challenge(
        digest=digest, endpoint="wifi", transaction_id="tx-3"
    )
    unknown = await clocked_repository.consume_challenge(
        digest=challenge_sha256("guess"), endpoint="servers", transaction_id="tx-4"
    )

    assert first[0] is Consumed.USED_NOW
    assert again[0] is Consumed.USED_BY_THIS_REQUEST  # a redelivered validate step
    assert second[0] is Consumed.USED
    assert elsewhere[0] is Consumed.OTHER_ENDPOINT
    assert unknown == (Consumed.UNKNOWN, None)
    used = present(await clocked_repository.challenge(digest))
    assert (used.used_by, used.used_at) == ("tx-1", clock.now)


async def test_an_expired_challenge_is_refused(
    clocked_repository: RequestRepository, clock: FakeClock
) -> None:
    digest = challenge_sha256("late")
    await clocked_repository.add_challenges(
        endpoint="servers", hashes=[digest], expires_at=clock.now + timedelta(minutes=5)
    )
    clock.advance(timedelta(minutes=6))

    outcome, _ = await clocked_repository.consume_challenge(
        digest=digest, endpoint="servers", transaction_id="tx"
    )

    assert outcome is Consumed.EXPIRED


async def test_of_requests_racing_for_one_challenge_exactly_one_wins(
    repository: RequestRepository, clock: FakeClock
) -> None:
    digest = challenge_sha256("contended")
    await repository.add_challenges(
        endpoint="servers", hashes=[digest], expires_at=clock.now + timedelta(days=3650)
    )

    outcomes = await asyncio.gather(
        *(
            repository.consume_challenge(digest=digest, endpoint="servers", transaction_id=f"t{i}")
            for i in range(8)
        )
    )

    kinds = [outcome for outcome, _ in outcomes]
    assert kinds.count(Consumed.USED_NOW) == 1
    assert kinds.count(Consumed.USED) == 7


async def test_an_operator_approves_a_waiting_request_and_the_history_says_who(
    clocked_repository: RequestRepository, clock: FakeClock
) -> None:
    await awaiting(clocked_repository, "tx-a|at:gear", "gear")
    clock.advance(timedelta(hours=2))

    approved = await clocked_repository.decide_approval(
        transaction_id="tx-a|at:gear", approve=True, by="alice"
    )
    twice = await clocked_repository.decide_approval(
        transaction_id="tx-a|at:gear", approve=False, by="bob"
    )

    assert approved is not None and twice is None
    assert (approved.state, approved.approval, approved.queued_at) == (
        R.VALIDATED,
        Approval.OPERATOR,
        None,
    )
    [event] = (await clocked_repository.history("tx-a|at:gear"))[-1:]
    assert (event.from_state, event.to_state, event.at) == (
        "AWAITING_APPROVAL",
        "VALIDATED",
        clock.now,
    )
    assert "approved by alice" in event.detail
    ready = await clocked_repository.approved_unqueued()
    assert [r.transaction_id for r in ready] == ["tx-a|at:gear"]
    await clocked_repository.mark_queued("tx-a|at:gear")
    assert await clocked_repository.approved_unqueued() == []


async def test_a_rejected_request_fails_with_the_operators_reason(
    repository: RequestRepository,
) -> None:
    await awaiting(repository, "tx-r|at:gear", "gear")

    rejected = present(
        await repository.decide_approval(
            transaction_id="tx-r|at:gear", approve=False, by="bob", reason="unknown device"
        )
    )

    assert (rejected.state, rejected.fail_info, rejected.fail_reason) == (
        R.FAILED,
        2,
        "unknown device",
    )
    history = await repository.history("tx-r|at:gear")
    assert "rejected by bob: unknown device" in history[-1].detail


async def test_waiting_requests_are_not_swept_and_expire_after_their_endpoints_time(
    clocked_repository: RequestRepository, clock: FakeClock
) -> None:
    await awaiting(clocked_repository, "old|at:gear", "gear")
    await awaiting(clocked_repository, "other|at:lab", "lab")
    clock.advance(timedelta(hours=71))
    await awaiting(clocked_repository, "new|at:gear", "gear")
    clock.advance(timedelta(hours=2))

    stale = await clocked_repository.find_stale(older_than=timedelta(seconds=60), limit=10)
    ended = await clocked_repository.expire_unapproved(endpoint="gear", waited=timedelta(hours=72))

    assert stale == []
    assert [r.transaction_id for r in ended] == ["old|at:gear"]
    assert (ended[0].state, ended[0].fail_reason) == (R.FAILED, "not approved within 72 h")
    assert present(await clocked_repository.get("other|at:lab")).state is R.AWAITING_APPROVAL
    assert present(await clocked_repository.get("new|at:gear")).state is R.AWAITING_APPROVAL


async def test_migration_0006_keeps_the_history_of_the_requests_it_copies(
    empty_database_url: str,
) -> None:
    config = alembic_config()

    def upgrade(revision: str) -> Callable[[Connection], None]:
        def run(connection: Connection) -> None:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

        return run

    await run_locked(empty_database_url, upgrade("0005"))
    engine = create_engine_for(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO scep_request (transaction_id, signer_key_id, message_type, "
                    "csr_der, signer_cert_der, subject, state, created_at, updated_at) VALUES "
                    "('old', 'k', 19, :blob, :blob, 'CN=x', 'RECEIVED', :at, :at)"
                ),
                {"blob": b"\x00", "at": T0},
            )
            await connection.execute(
                text(
                    "INSERT INTO request_event (request_id, at, to_state) "
                    "SELECT id, :at, 'RECEIVED' FROM scep_request"
                ),
                {"at": T0},
            )
        await upgrade_to_head(empty_database_url)
        async with engine.connect() as connection:
            events = await connection.scalar(text("SELECT count(*) FROM request_event"))
            endpoint = await connection.scalar(text("SELECT endpoint FROM scep_request"))
        assert (events, endpoint) == (1, "default")
        async with engine.begin() as connection:  # the cascade is back
            await connection.execute(text("DELETE FROM scep_request"))
        async with engine.connect() as connection:
            assert await connection.scalar(text("SELECT count(*) FROM request_event")) == 0
    finally:
        await engine.dispose()
