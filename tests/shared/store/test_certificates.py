"""Issuing exactly once, serial uniqueness, revocation and CRLs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from scepline_shared.store import (
    CrlNumberCollision,
    CrlView,
    IssuedCertificateRecord,
    RequestRepository,
    RequestState,
    SerialCollision,
    serial_hex,
)
from scepline_shared.store.models import (
    IssuanceJournal,
    IssuedCertificate,
    JournalKind,
    RequestEvent,
)
from tests.shared.store.helpers import (
    T0,
    certificate_record,
    claim_for,
    count_rows,
    key_id,
    present,
    record,
    sign,
    validated,
)


async def test_a_claim_journals_the_signature_before_the_certificate_exists(
    repository: RequestRepository, store_engine: AsyncEngine
) -> None:
    before = await validated(repository)
    cert = certificate_record("1f2e3d")

    claimed = present(
        await repository.claim_signature(transaction_id="txn-1", claim=claim_for(cert))
    )

    assert (claimed.state, claimed.cert_serial, claimed.cert_der) == (
        RequestState.SIGNING,
        "1f2e3d",
        None,
    )
    (entry,) = await repository.journal()
    assert (entry.kind, entry.serial, entry.transaction_id, entry.subject) == (
        JournalKind.CERTIFICATE,
        "1f2e3d",
        "txn-1",
        cert.subject,
    )
    assert await count_rows(store_engine, IssuedCertificate) == 0

    view = present(await repository.record_signed(transaction_id="txn-1", certificate=cert))

    assert (view.state, view.cert_serial, view.cert_der, view.version) == (
        RequestState.SIGNED,
        "1f2e3d",
        cert.der,
        before.version + 2,
    )
    stored = present(await repository.get_certificate("1f2e3d"))
    assert (stored.transaction_id, stored.der, stored.not_before) == ("txn-1", cert.der, T0)
    assert not stored.is_revoked
    assert [e.to_state for e in await repository.history("txn-1")][-2:] == ["SIGNING", "SIGNED"]


async def test_claim_outside_validated_journals_and_stores_nothing(
    repository: RequestRepository, store_engine: AsyncEngine
) -> None:
    await record(repository)
    claim = claim_for(certificate_record())
    assert await repository.claim_signature(transaction_id="txn-1", claim=claim) is None
    assert await count_rows(store_engine, IssuedCertificate) == 0
    assert await count_rows(store_engine, IssuanceJournal) == 0


async def test_redelivered_sign_message_finds_the_claim_and_signs_nothing_more(
    repository: RequestRepository, store_engine: AsyncEngine
) -> None:
    await validated(repository)
    first = certificate_record("a1")
    assert await repository.claim_signature(transaction_id="txn-1", claim=claim_for(first))

    again = await repository.claim_signature(
        transaction_id="txn-1", claim=claim_for(certificate_record("a2"))
    )
    assert again is None
    assert [e.serial for e in await repository.journal()] == ["a1"]
    assert present(await repository.get("txn-1")).cert_serial == "a1"


async def test_only_the_claimed_serial_is_recorded(
    repository: RequestRepository, store_engine: AsyncEngine
) -> None:
    await validated(repository)
    await repository.claim_signature(
        transaction_id="txn-1", claim=claim_for(certificate_record("a1"))
    )
    other = certificate_record("a2")
    assert await repository.record_signed(transaction_id="txn-1", certificate=other) is None
    assert await count_rows(store_engine, IssuedCertificate) == 0
    assert present(await repository.get("txn-1")).state is RequestState.SIGNING


async def test_concurrent_signers_claim_exactly_once(
    repository: RequestRepository, store_engine: AsyncEngine
) -> None:
    await validated(repository)
    attempts = [sign(repository, "txn-1", certificate_record(f"{n + 1:x}0")) for n in range(10)]
    views = await asyncio.gather(*attempts)

    winners = [view for view in views if view is not None]
    assert len(winners) == 1
    assert await count_rows(store_engine, IssuedCertificate) == 1
    assert await count_rows(store_engine, IssuanceJournal) == 1
    stored = await count_rows(
        store_engine, IssuedCertificate, IssuedCertificate.serial == winners[0].cert_serial
    )
    assert stored == 1
    assert await count_rows(store_engine, RequestEvent, RequestEvent.to_state == "SIGNED") == 1


async def test_serial_collision_leaves_the_request_for_a_retry(
    repository: RequestRepository, store_engine: AsyncEngine
) -> None:
    await validated(repository, "txn-1")
    await sign(repository, "txn-1", certificate_record("ab"))
    before = await validated(repository, "txn-2")

    with pytest.raises(SerialCollision) as caught:
        await sign(repository, "txn-2", certificate_record("ab"))
    assert caught.value.serial == "ab"
    assert await repository.get("txn-2") == before
    assert len(await repository.history("txn-2")) == 2

    retried = await sign(repository, "txn-2", certificate_record("cd"))
    assert retried is not None and retried.cert_serial == "cd"
    assert await count_rows(store_engine, IssuedCertificate) == 2


@pytest.mark.parametrize(
    ("given", "expected"),
    [(0x1F, "1f"), ("001F", "1f"), ("0x1f", "1f"), ("1f:2e", "1f2e"), (2**159, "8" + "0" * 39)],
)
def test_serial_hex_spells_serials_one_way(given: int | str, expected: str) -> None:
    assert serial_hex(given) == expected


@pytest.mark.parametrize("bad", [0, -1, "", "zz", True, 2**256])
def test_serial_hex_refuses_non_serials(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        serial_hex(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "overrides",
    [
        {"serial": "00ab"},
        {"serial": "AB"},
        {"serial": ""},
        {"not_before": datetime(2026, 1, 1)},
        {"der": b""},
    ],
    ids=["leading-zero", "uppercase", "empty", "naive-time", "empty-der"],
)
def test_certificate_record_is_validated(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        certificate_record(**overrides)


async def test_lookup_accepts_any_spelling_and_keeps_utc(repository: RequestRepository) -> None:
    await validated(repository)
    paris = timezone(timedelta(hours=2))
    cert = certificate_record("abc", not_before=datetime(2026, 6, 1, 14, 0, tzinfo=paris))
    await sign(repository, "txn-1", cert)

    for spelling in (0xABC, "ABC", "0abc"):
        found = present(await repository.get_certificate(spelling))
        assert found.serial == "abc"
    assert found.not_before == datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert found.not_before.tzinfo is UTC
    assert await repository.get_certificate("def") is None


async def test_revocation_is_first_write_wins(repository: RequestRepository) -> None:
    await validated(repository, "txn-1")
    await sign(repository, "txn-1", certificate_record("a1"))
    await validated(repository, "txn-2")
    await sign(repository, "txn-2", certificate_record("b2", issuer="CN=Other CA"))

    revoked = await repository.revoke("a1", reason=1, at=T0)
    assert revoked is not None and (revoked.revoked_at, revoked.revocation_reason) == (T0, 1)
    again = await repository.revoke("A1", reason=4, at=T0 + timedelta(days=1))
    assert again == revoked

    assert [c.serial for c in await repository.revoked("CN=Scepline Test CA")] == ["a1"]
    assert await repository.revoked("CN=Other CA") == []
    assert await repository.revoke("ffff", reason=0) is None
    with pytest.raises(ValueError):
        await repository.revoke("b2", reason=7)
    with pytest.raises(ValueError, match="timezone-aware"):
        await repository.revoke("b2", reason=1, at=datetime(2026, 1, 1))
    assert not present(await repository.get_certificate("b2")).is_revoked


async def test_latest_crl_per_issuer(repository: RequestRepository) -> None:
    issuer_a, issuer_b = key_id("ca-a"), key_id("ca-b")

    async def store(number: int, issuer: str) -> CrlView:
        return await repository.store_crl(
            number=number,
            issuer_key_id=issuer,
            this_update=T0,
            next_update=T0 + timedelta(days=1),
            der=f"crl-{number}".encode(),
        )

    assert await repository.latest_crl(issuer_a) is None
    await store(1, issuer_a)
    await store(2, issuer_a)
    await store(3, issuer_b)

    latest = await repository.latest_crl(issuer_a)
    assert latest is not None and (latest.number, latest.der) == (2, b"crl-2")
    assert latest.next_update == T0 + timedelta(days=1)
    assert present(await repository.latest_crl(issuer_b)).number == 3
    with pytest.raises(CrlNumberCollision) as caught:
        await store(2, issuer_b)
    assert caught.value.number == 2


def test_issued_certificate_record_is_frozen() -> None:
    cert = certificate_record()
    with pytest.raises(AttributeError):
        cert.serial = "ff"  # type: ignore[misc]
    assert isinstance(cert, IssuedCertificateRecord)


async def test_certificates_are_found_by_part_of_their_subject_in_any_case(
    repository: RequestRepository,
) -> None:
    for serial, subject, day in (
        ("a1", "CN=LAPTOP-042,O=Contoso", 1),
        ("a2", "CN=laptop-042,O=Contoso", 3),
        ("a3", "CN=phone_7,O=Contoso", 2),
        ("a4", "CN=phoneX7,O=Contoso", 2),
    ):
        transaction_id = f"txn-{serial}"
        await validated(repository, transaction_id)
        issued = certificate_record(serial, subject=subject, not_before=T0 + timedelta(days=day))
        present(await sign(repository, transaction_id, issued))

    found = await repository.find_certificates("Laptop-042")
    literal = await repository.find_certificates("phone_7")  # "_" is not a wildcard
    everything = await repository.find_certificates("o=contoso", limit=2)

    assert [c.serial for c in found] == ["a2", "a1"]  # newest first
    assert [c.serial for c in literal] == ["a3"]
    assert len(everything) == 2
    with pytest.raises(ValueError):
        await repository.find_certificates("")
