"""One-time challenges (`scepline challenge new`): each works once, until it
expires, at the endpoint it was made for, and optionally only for a subject or
for some SANs.

The store holds their SHA-256 only and consumes one with a compare-and-set, so
two requests racing with one challenge cannot both pass. A request that breaks
a binding leaves the challenge unused (its holder may still use it as bound).
"""

from __future__ import annotations

from typing import Protocol

from cryptography import x509

from scepline_shared.ca import CertificateProfile, PolicyViolation
from scepline_shared.ca.profile import requested_sans
from scepline_shared.store.challenges import Consumed, challenge_sha256
from scepline_shared.store.views import OneTimeChallengeView

from .base import ValidationOutcome, ValidationRequest
from .static import challenge_password

__all__ = ["ConsumesChallenges", "OneTimeChallengeValidator", "san_text", "subject_matches"]

_REFUSALS = {
    Consumed.UNKNOWN: "the challengePassword is not a one-time challenge of this endpoint",
    Consumed.OTHER_ENDPOINT: "the challenge was made for another endpoint",
    Consumed.USED: "challenge already used",
    Consumed.EXPIRED: "challenge expired",
}


class ConsumesChallenges(Protocol):
    async def challenge(self, digest: str) -> OneTimeChallengeView | None: ...

    async def consume_challenge(
        self, *, digest: str, endpoint: str, transaction_id: str
    ) -> tuple[Consumed, OneTimeChallengeView | None]: ...


def san_text(name: x509.GeneralName) -> str:
    """A SAN as ``scepline challenge new --san`` spells it: ``dns:host.example.com``."""
    if isinstance(name, x509.DNSName):
        return f"dns:{name.value.lower()}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value.lower()}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"uri:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"ip:{name.value}"
    return f"{type(name).__name__}:{name.value!r}"


def subject_matches(bound: str, subject: x509.Name) -> bool:
    """Whether ``subject`` is the RFC 4514 name ``bound`` (attribute types and
    values compared, not their spelling)."""
    try:
        expected = x509.Name.from_rfc4514_string(bound)
    except ValueError:
        return False
    return _normal(expected) == _normal(subject)


def _normal(name: x509.Name) -> list[tuple[str, str]]:
    return sorted(
        (attribute.oid.dotted_string, str(attribute.value).strip().lower()) for attribute in name
    )


class OneTimeChallengeValidator:
    # A used challenge is gone: the profile is checked before it is spent.
    checks_profile_first = True

    def __init__(self, store: ConsumesChallenges, *, endpoint: str, profile: CertificateProfile):
        self._store = store
        self._endpoint = endpoint
        self._profile = profile

    async def validate(self, request: ValidationRequest) -> ValidationOutcome:
        if (renewal := ValidationOutcome.renewal_kept(request)) is not None:
            return renewal
        supplied = challenge_password(request.csr)
        if supplied is None:
            return ValidationOutcome.reject("the CSR has no challengePassword")
        digest = challenge_sha256(supplied)
        stored = await self._store.challenge(digest)
        if stored is not None and stored.endpoint == self._endpoint:
            refused = self._binding_refusal(stored, request.csr)
            if refused is not None:
                return ValidationOutcome.reject(refused)
        outcome, _ = await self._store.consume_challenge(
            digest=digest, endpoint=self._endpoint, transaction_id=request.transaction_id
        )
        if outcome in (Consumed.USED_NOW, Consumed.USED_BY_THIS_REQUEST):
            return ValidationOutcome.approve("one-time challenge used")
        return ValidationOutcome.reject(_REFUSALS[outcome])

    def _binding_refusal(
        self, stored: OneTimeChallengeView, csr: x509.CertificateSigningRequest
    ) -> str | None:
        if stored.bound_subject is not None and not subject_matches(
            stored.bound_subject, self._profile.issued_subject(csr)
        ):
            return f"challenge bound to another subject (this one is for {stored.bound_subject})"
        if stored.sans:
            try:
                asked = [san_text(name) for name in self._profile.filter_sans(requested_sans(csr))]
            except PolicyViolation as refused:
                return refused.reason
            allowed = {
                san.lower() if san.startswith(("dns:", "email:")) else san for san in stored.sans
            }
            outside = [name for name in asked if name not in allowed]
            if outside or not asked:
                return f"challenge bound to other names (this one is for {', '.join(stored.sans)})"
        return None
