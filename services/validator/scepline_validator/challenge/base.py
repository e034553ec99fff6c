"""The challenge-provider hook."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Protocol

from cryptography import x509

from scepline_shared.store.models import DEFAULT_ENDPOINT, Approval

__all__ = [
    "ChallengeValidator",
    "ValidationOutcome",
    "ValidationRequest",
    "checks_profile_first",
]


@dataclass(frozen=True)
class ValidationRequest:
    # The store's request key (a renewal's carries a "|renew:<serial>" suffix).
    transaction_id: str
    csr: x509.CertificateSigningRequest
    # Set when the request is signed by a certificate this CA issued, still valid,
    # with no revoked certificate in its renewal lineage, and asks for no other
    # identity than that certificate's (RenewalReq, or a PKCSReq signed with the
    # old certificate). Only then may a provider approve without a challenge.
    renewal_of_serial: str | None = None
    # The CSR exactly as the client sent it: Intune checks its own challenge against
    # these bytes, so a re-encoding could break the match.
    csr_der: bytes = field(default=b"", repr=False)
    # The client's SCEP transactionID (Intune correlates all three calls by it);
    # None: the same as ``transaction_id``.
    scep_transaction_id: str | None = None
    # When the request was recorded: a provider that keeps failing may give up
    # once the device's challenge must have expired.
    received_at: dt.datetime | None = None
    # The SCEP endpoint it arrived at (a one-time challenge is one endpoint's).
    endpoint: str = DEFAULT_ENDPOINT

    @property
    def client_transaction_id(self) -> str:
        return self.scep_transaction_id or self.transaction_id


@dataclass(frozen=True)
class ValidationOutcome:
    approved: bool
    # Operator-readable, never the challenge itself.
    reason: str = ""
    # The provider's own result code (e.g. Intune's ``code``), recorded on the request.
    provider_code: str | None = None
    # What vouched for an approved request: a shared secret (the default, the
    # least trust), the provider checking the names itself, or a renewal.
    approval: Approval = Approval.CHALLENGE
    # Neither yes nor no yet: an operator decides (the "manual" provider).
    awaiting_approval: bool = False

    @classmethod
    def approve(
        cls,
        reason: str = "",
        provider_code: str | None = None,
        *,
        approval: Approval = Approval.CHALLENGE,
    ) -> ValidationOutcome:
        return cls(True, reason, provider_code, approval)

    @classmethod
    def reject(cls, reason: str, provider_code: str | None = None) -> ValidationOutcome:
        return cls(False, reason, provider_code)

    @classmethod
    def await_operator(cls, reason: str) -> ValidationOutcome:
        """Leave the decision to an operator (`scepline request approve|reject`)."""
        return cls(False, reason, awaiting_approval=True)

    @classmethod
    def renewal_kept(cls, request: ValidationRequest) -> ValidationOutcome | None:
        """Approval of a renewal, which the challenge-less providers (static,
        one-time, manual) give without a challenge: signed with a valid
        certificate we issued and asking for its identity again (the validate
        step checked both), that is the authentication. None: not a renewal."""
        if request.renewal_of_serial is None:
            return None
        return cls.approve(
            f"renewal of {request.renewal_of_serial}, identity kept", approval=Approval.RENEWAL
        )


class ChallengeValidator(Protocol):
    async def validate(self, request: ValidationRequest) -> ValidationOutcome:
        """Decide; raise ``Transient`` (``scepline_shared.pipeline``) to be retried."""
        ...


def checks_profile_first(provider: object) -> bool:
    """Whether the validate step checks a request against the certificate
    profile before asking ``provider``: a provider that uses something up (a
    one-time challenge) or asks an operator should not do so for a request the
    signer would refuse anyway."""
    return bool(getattr(provider, "checks_profile_first", False))
