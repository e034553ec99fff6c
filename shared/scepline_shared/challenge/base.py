"""The challenge-provider hook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

__all__ = ["ChallengeValidator", "ValidationOutcome", "ValidationRequest"]


@dataclass(frozen=True)
class ValidationRequest:
    transaction_id: str
    csr: x509.CertificateSigningRequest
    # Set when the request is signed by a certificate this CA issued, still valid
    # and not revoked (RenewalReq, or a PKCSReq signed with the old certificate).
    renewal_of_serial: str | None = None


@dataclass(frozen=True)
class ValidationOutcome:
    approved: bool
    # Operator-readable, never the challenge itself.
    reason: str = ""
    # The provider's own result code (e.g. Intune's ``code``), recorded on the request.
    provider_code: str | None = None

    @classmethod
    def approve(cls, reason: str = "", provider_code: str | None = None) -> ValidationOutcome:
        return cls(True, reason, provider_code)

    @classmethod
    def reject(cls, reason: str, provider_code: str | None = None) -> ValidationOutcome:
        return cls(False, reason, provider_code)


class ChallengeValidator(Protocol):
    async def validate(self, request: ValidationRequest) -> ValidationOutcome:
        """Decide; raise ``Transient`` (``scepline_shared.pipeline``) to be retried."""
        ...
