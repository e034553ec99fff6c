"""Builders and probes shared by the store tests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from scepline_shared.store import (
    IssuedCertificateRecord,
    RecordResult,
    RequestRepository,
    RequestState,
    RequestView,
)
from scepline_shared.store.views import SignatureClaim

__all__ = [
    "T0",
    "FakeClock",
    "certificate_record",
    "claim_for",
    "count_rows",
    "key_id",
    "present",
    "record",
    "sign",
    "validated",
]

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


_T = TypeVar("_T")


def present(value: _T | None) -> _T:
    """The value, asserting the store returned one."""
    assert value is not None
    return value


@dataclass
class FakeClock:
    """A clock the test moves by hand."""

    now: datetime = field(default=T0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


def key_id(label: str = "device") -> str:
    return hashlib.sha256(label.encode()).hexdigest()


async def record(
    repository: RequestRepository, transaction_id: str = "txn-1", **overrides: Any
) -> RecordResult:
    values: dict[str, Any] = {
        "transaction_id": transaction_id,
        "signer_key_id": key_id(),
        "message_type": 19,
        "csr_der": b"csr:" + transaction_id.encode(),
        "signer_cert_der": b"self-signed",
        "subject": "CN=device-1,O=Example",
    }
    values.update(overrides)
    return await repository.record_request(**values)


async def validated(repository: RequestRepository, transaction_id: str = "txn-1") -> RequestView:
    await record(repository, transaction_id)
    view = await repository.transition(
        transaction_id=transaction_id,
        from_state=RequestState.RECEIVED,
        to_state=RequestState.VALIDATED,
        detail="challenge ok",
    )
    assert view is not None
    return view


def certificate_record(serial: str = "1f2e3d", **overrides: Any) -> IssuedCertificateRecord:
    values: dict[str, Any] = {
        "serial": serial,
        "issuer": "CN=Scepline Test CA",
        "subject": "CN=device-1,O=Example",
        "not_before": T0,
        "not_after": T0 + timedelta(days=365),
        "der": b"cert:" + serial.encode(),
    }
    values.update(overrides)
    return IssuedCertificateRecord(**values)


def claim_for(certificate: IssuedCertificateRecord, tbs: str = "t" * 64) -> SignatureClaim:
    """The signing claim a signer writes before the CA key signs ``certificate``."""
    return SignatureClaim(
        serial=certificate.serial,
        issuer_key_id=certificate.issuer_key_id or key_id("ca"),
        issuer=certificate.issuer,
        subject=certificate.subject,
        not_before=certificate.not_before,
        not_after=certificate.not_after,
        tbs_sha256=tbs,
    )


async def sign(
    repository: RequestRepository, transaction_id: str, certificate: IssuedCertificateRecord
) -> RequestView | None:
    """What the sign step does to the store: claim the serial, then record the
    certificate (None if the claim is not taken)."""
    claimed = await repository.claim_signature(
        transaction_id=transaction_id, claim=claim_for(certificate)
    )
    if claimed is None:
        return None
    return await repository.record_signed(transaction_id=transaction_id, certificate=certificate)


async def count_rows(engine: AsyncEngine, model: Any, *where: Any) -> int:
    async with engine.connect() as connection:
        result = await connection.scalar(select(func.count()).select_from(model).where(*where))
    return int(result or 0)
