"""The issuance journal: append-only, one entry per serial and per CRL number,
voided claims revoked, renewal lineages, and FAILED-with-revocation as one change."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from scepline_shared.store import RequestRepository, RequestState
from scepline_shared.store.certificates import CRL_REASON_SUPERSEDED
from scepline_shared.store.models import IssuanceJournal, JournalKind
from tests.shared.store.helpers import (
    T0,
    certificate_record,
    claim_for,
    key_id,
    present,
    sign,
    validated,
)


async def test_the_journal_is_append_only(
    repository: RequestRepository, store_engine: AsyncEngine
) -> None:
    await validated(repository)
    await sign(repository, "txn-1", certificate_record("a1"))
    for statement in (
        update(IssuanceJournal).values(serial="ff"),
        delete(IssuanceJournal),
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with store_engine.begin() as connection:
                await connection.execute(statement)
    assert [entry.serial for entry in await repository.journal()] == ["a1"]


async def test_a_crl_number_is_taken_by_its_journal_entry(repository: RequestRepository) -> None:
    claim = {
        "issuer_key_id": key_id("ca"),
        "issuer": "CN=CA",
        "this_update": T0,
        "next_update": T0 + timedelta(days=1),
        "tbs_sha256": "c" * 64,
    }
    assert await repository.claim_crl_number(number=7, **claim)
    assert not await repository.claim_crl_number(number=7, **claim)
    entry = present(await repository.journal_entry(JournalKind.CRL, 7))
    assert (entry.kind, entry.serial, entry.subject) == (JournalKind.CRL, "7", "CN=CA")


async def test_ca_certificates_are_journaled_once(repository: RequestRepository) -> None:
    entry = {
        "kind": JournalKind.RA_CERTIFICATE,
        "issuer_key_id": key_id("ca"),
        "issuer": "CN=CA",
        "serial": 0xABC,
        "subject": "CN=RA",
        "not_before": T0,
        "not_after": T0 + timedelta(days=365),
        "tbs_sha256": "d" * 64,
    }
    assert await repository.journal_ca_certificate(**entry)  # type: ignore[arg-type]
    assert not await repository.journal_ca_certificate(**entry)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await repository.journal_ca_certificate(**{**entry, "kind": JournalKind.CERTIFICATE})  # type: ignore[arg-type]
    assert len(await repository.journal()) == 1


async def test_a_voided_claim_is_a_revoked_serial_with_its_reason(
    repository: RequestRepository,
) -> None:
    await validated(repository)
    cert = certificate_record("b1")
    await repository.claim_signature(transaction_id="txn-1", claim=claim_for(cert))

    back = present(
        await repository.void_claim(transaction_id="txn-1", serial="b1", why="signer died")
    )

    assert (back.state, back.cert_serial) == (RequestState.VALIDATED, None)
    voided = present(await repository.get_certificate("b1"))
    assert voided.is_voided and voided.der is None
    assert voided.revocation_reason == CRL_REASON_SUPERSEDED
    assert voided.issuer_key_id == claim_for(cert).issuer_key_id
    assert [c.serial for c in await repository.revoked(cert.issuer)] == ["b1"]
    (event,) = [e for e in await repository.history("txn-1") if e.from_state == "SIGNING"]
    assert "signer died" in event.detail and "b1 voided" in event.detail
    # Too late for the signer that held it, and for a second void.
    assert await repository.record_signed(transaction_id="txn-1", certificate=cert) is None
    assert await repository.void_claim(transaction_id="txn-1", serial="b1", why="again") is None


async def test_only_a_claim_older_than_asked_is_voided(repository: RequestRepository) -> None:
    await validated(repository)
    await repository.claim_signature(
        transaction_id="txn-1", claim=claim_for(certificate_record("c1"))
    )
    young = await repository.void_claim(
        transaction_id="txn-1", serial="c1", why="stale", claimed_before=T0 - timedelta(days=1)
    )
    assert young is None
    assert present(await repository.get("txn-1")).state is RequestState.SIGNING


async def test_failing_a_signed_request_revokes_its_certificate_in_the_same_change(
    repository: RequestRepository,
) -> None:
    await validated(repository)
    await sign(repository, "txn-1", certificate_record("d1"))

    failed = present(
        await repository.fail_and_revoke(
            transaction_id="txn-1",
            from_state=RequestState.SIGNED,
            detail="withheld",
            fail_reason="refused",
        )
    )

    assert (failed.state, failed.fail_reason) == (RequestState.FAILED, "refused")
    assert present(await repository.get_certificate("d1")).is_revoked
    assert (
        await repository.fail_and_revoke(
            transaction_id="txn-1", from_state=RequestState.SIGNED, detail="again"
        )
        is None
    )


async def test_failing_a_claimed_request_voids_its_serial(repository: RequestRepository) -> None:
    await validated(repository)
    await repository.claim_signature(
        transaction_id="txn-1", claim=claim_for(certificate_record("e1"))
    )
    failed = present(
        await repository.fail_and_revoke(
            transaction_id="txn-1", from_state=RequestState.SIGNING, detail="purged"
        )
    )
    assert failed.state is RequestState.FAILED
    assert present(await repository.get_certificate("e1")).is_voided


async def test_a_revoked_link_anywhere_in_a_renewal_lineage_is_found(
    repository: RequestRepository,
) -> None:
    previous = None
    for index, serial in enumerate(["f1", "f2", "f3", "f4"]):
        await validated(repository, f"txn-{index}")
        await sign(repository, f"txn-{index}", certificate_record(serial, renews_serial=previous))
        previous = serial
    await validated(repository, "txn-other")
    await sign(repository, "txn-other", certificate_record("99"))

    assert await repository.revoked_in_lineage("f4") is None
    await repository.revoke("f2", reason=1)
    assert await repository.revoked_in_lineage("f4") == "f2"
    assert await repository.revoked_in_lineage("f2") == "f2"
    assert await repository.revoked_in_lineage("f1") is None
    assert await repository.revoked_in_lineage("99") is None
    await repository.revoke("f4", reason=1)
    assert await repository.revoked_in_lineage("f4") == "f4"  # the nearest link first
