"""CSRs are sealed at rest: a stored request holds neither the client's
challengePassword nor the CSR's bytes; the repository, holding the store key,
hands every caller the CSR exactly as received."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scepline_shared.store import (
    CsrSealer,
    RequestRepository,
    RequestState,
    StoreError,
    StoreKeyError,
    seal_legacy_csrs,
)
from tests.shared.store.helpers import FakeClock, present, record
from tests.support.pki import csr_for, requester

CHALLENGE = "the-device-challenge-nobody-else-may-read"


def csr_der(label: str = "device") -> bytes:
    """A real CSR carrying the challengePassword, as a device sends it."""
    return csr_for(requester(), cn=label, challenge=CHALLENGE).public_bytes(Encoding.DER)


async def store_in_the_clear(engine: AsyncEngine, transaction_id: str, csr: bytes) -> None:
    """Make the row look as a version without sealing left it."""
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE scep_request SET csr_der = :csr WHERE transaction_id = :id"),
            {"csr": csr, "id": transaction_id},
        )


async def stored_csr(engine: AsyncEngine, transaction_id: str) -> bytes:
    """The `csr_der` column as anyone reading the database sees it."""
    async with engine.connect() as connection:
        stored = await connection.scalar(
            text("SELECT csr_der FROM scep_request WHERE transaction_id = :id"),
            {"id": transaction_id},
        )
    return bytes(stored)


async def test_a_stored_request_holds_neither_the_challenge_nor_the_csr(
    repository: RequestRepository, store_engine: AsyncEngine
) -> None:
    csr = csr_der()
    assert CHALLENGE.encode() in csr  # the attribute travels in the clear inside the CSR

    recorded = await record(repository, "txn-1", csr_der=csr)

    stored = await stored_csr(store_engine, "txn-1")
    assert CHALLENGE.encode() not in stored
    assert csr not in stored
    assert recorded.request.csr_der == csr
    assert present(await repository.get("txn-1")).csr_der == csr


async def test_every_read_hands_back_the_csr_as_received(
    clocked_repository: RequestRepository, clock: FakeClock
) -> None:
    repository = clocked_repository
    csr = csr_der()
    await record(repository, "txn-1", csr_der=csr)
    await repository.park(transaction_id="txn-1", reason="test")
    await record(repository, "txn-2", csr_der=csr)
    clock.advance(timedelta(hours=1))

    moved = await repository.transition(
        transaction_id="txn-2",
        from_state=RequestState.RECEIVED,
        to_state=RequestState.VALIDATED,
        detail="ok",
    )
    again = await record(repository, "txn-1", csr_der=b"a retransmission")
    listed = await repository.in_state(RequestState.RECEIVED)
    parked = await repository.parked()
    stale = await repository.find_stale(older_than=timedelta(minutes=1), limit=10)

    assert present(moved).csr_der == csr
    assert not again.created and again.request.csr_der == csr
    assert [r.csr_der for r in listed + parked] == [csr, csr]
    assert [r.csr_der for r in stale] == [csr]


@pytest.mark.parametrize("tampering", ["moved from another request", "altered"])
async def test_a_sealed_csr_that_was_moved_or_altered_does_not_open(
    repository: RequestRepository, store_engine: AsyncEngine, tampering: str
) -> None:
    await record(repository, "txn-1", csr_der=csr_der("one"))
    await record(repository, "txn-2", csr_der=csr_der("two"))
    sealed_one = await stored_csr(store_engine, "txn-1")
    sealed_two = await stored_csr(store_engine, "txn-2")
    if tampering == "altered":
        replacement = sealed_two[:-1] + bytes([sealed_two[-1] ^ 1])
    else:
        replacement = sealed_one
    await store_in_the_clear(store_engine, "txn-2", replacement)

    with pytest.raises(StoreError, match="txn-2"):
        await repository.get("txn-2")
    assert present(await repository.get("txn-1")).csr_der == csr_der("one")


async def test_csrs_stored_in_the_clear_before_are_read_then_sealed_at_start_up(
    repository: RequestRepository, store_engine: AsyncEngine, store_sealer: CsrSealer
) -> None:
    csrs = {f"txn-{i}": csr_der(f"device-{i}") for i in range(5)}
    for transaction_id, csr in csrs.items():
        await record(repository, transaction_id, csr_der=csr)
    for transaction_id in ("txn-0", "txn-1", "txn-2"):  # stored before the upgrade
        await store_in_the_clear(store_engine, transaction_id, csrs[transaction_id])
    assert present(await repository.get("txn-0")).csr_der == csrs["txn-0"]

    # Batches of two: the pass walks down over rows sealed and not.
    sealed = await seal_legacy_csrs(store_engine, store_sealer, batch=2)

    assert sealed == 3
    for transaction_id, csr in csrs.items():
        stored = await stored_csr(store_engine, transaction_id)
        assert CHALLENGE.encode() not in stored and csr not in stored
        assert present(await repository.get(transaction_id)).csr_der == csr
    assert await seal_legacy_csrs(store_engine, store_sealer) == 0


async def test_an_interrupted_pass_is_finished_by_the_next_start(
    repository: RequestRepository, store_engine: AsyncEngine, store_sealer: CsrSealer
) -> None:
    csrs = {f"txn-{i}": csr_der(f"device-{i}") for i in range(4)}
    for transaction_id, csr in csrs.items():
        await record(repository, transaction_id, csr_der=csr)
        await store_in_the_clear(store_engine, transaction_id, csr)
    # The pass seals newest first: a process stopped after one batch sealed the newest two.
    for transaction_id in ("txn-2", "txn-3"):
        sealed = store_sealer.seal(csrs[transaction_id], transaction_id)
        await store_in_the_clear(store_engine, transaction_id, sealed)

    assert await seal_legacy_csrs(store_engine, store_sealer) == 2
    for transaction_id in csrs:
        assert CHALLENGE.encode() not in await stored_csr(store_engine, transaction_id)


async def test_a_key_that_does_not_open_the_stored_csrs_is_refused(
    repository: RequestRepository, store_engine: AsyncEngine
) -> None:
    await record(repository, "txn-0", csr_der=csr_der())
    await store_in_the_clear(store_engine, "txn-0", csr_der())  # must not be sealed under it
    await record(repository, "txn-1", csr_der=csr_der())

    with pytest.raises(StoreKeyError, match="not the key the stored CSRs were sealed with"):
        await seal_legacy_csrs(store_engine, CsrSealer.generate())
    assert await stored_csr(store_engine, "txn-0") == csr_der()


async def test_an_empty_store_takes_any_key(store_engine: AsyncEngine) -> None:
    assert await seal_legacy_csrs(store_engine, CsrSealer.generate()) == 0
