"""What the sign step and the CRL publisher need from the state store.

The store's RequestRepository provides both; the signer depends on this much
only: claims, certificates, CRLs and their journal entries.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from scepline_shared.store.models import JournalKind, RequestState
from scepline_shared.store.ports import MovesRequests
from scepline_shared.store.views import (
    CertificateView,
    CrlView,
    IssuedCertificateRecord,
    JournalEntry,
    RequestView,
    SignatureClaim,
)

__all__ = ["CrlStore", "JournalsCaCertificates", "SignerStore"]


class SignerStore(MovesRequests, Protocol):
    async def claim_signature(
        self, *, transaction_id: str, claim: SignatureClaim
    ) -> RequestView | None: ...

    async def record_signed(
        self,
        *,
        transaction_id: str,
        certificate: IssuedCertificateRecord,
        detail: str | None = None,
    ) -> RequestView | None: ...

    async def void_claim(
        self,
        *,
        transaction_id: str,
        serial: str,
        why: str,
        claimed_before: datetime | None = None,
        to_state: RequestState = RequestState.VALIDATED,
        **fields: Any,
    ) -> RequestView | None: ...


class JournalsCaCertificates(Protocol):
    """Journaling the CA's own certificates: each generation's CA and RA
    certificates, and the OCSP responder certificates the keeper signs."""

    async def journal_ca_certificate(
        self,
        *,
        kind: JournalKind,
        issuer_key_id: str,
        issuer: str,
        serial: str | int,
        subject: str,
        not_before: datetime,
        not_after: datetime,
        tbs_sha256: str,
    ) -> bool: ...


class CrlStore(JournalsCaCertificates, Protocol):
    """The CRL publisher's store (and the journaling of the CA's own certificates)."""

    async def latest_crl(self, issuer_key_id: str) -> CrlView | None: ...

    async def revoked(
        self, issuer: str, *, expiring_from: datetime | None = None
    ) -> list[CertificateView]: ...

    async def claim_crl_number(
        self,
        *,
        number: int,
        issuer_key_id: str,
        issuer: str,
        this_update: datetime,
        next_update: datetime,
        tbs_sha256: str,
    ) -> bool: ...

    async def journal_entry(self, kind: JournalKind, serial: str | int) -> JournalEntry | None: ...

    async def store_crl(
        self,
        *,
        number: int,
        issuer_key_id: str,
        this_update: datetime,
        next_update: datetime,
        der: bytes,
    ) -> CrlView: ...
