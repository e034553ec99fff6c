"""A static shared challenge, for labs and for clients outside Intune."""

from __future__ import annotations

import hmac

from cryptography import x509
from cryptography.x509.oid import AttributeOID

from .base import ValidationOutcome, ValidationRequest

__all__ = ["StaticChallengeValidator", "challenge_password"]


def challenge_password(csr: x509.CertificateSigningRequest) -> bytes | None:
    """The PKCS#9 challengePassword attribute of a CSR, or None."""
    try:
        return csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    except x509.AttributeNotFound:
        return None
    except ValueError:
        return None


class StaticChallengeValidator:
    def __init__(self, challenge: str) -> None:
        if not challenge:
            raise ValueError("the static challenge must not be empty")
        self._challenge = challenge.encode()

    async def validate(self, request: ValidationRequest) -> ValidationOutcome:
        if (renewal := ValidationOutcome.renewal_kept(request)) is not None:
            return renewal
        supplied = challenge_password(request.csr)
        if supplied is None:
            return ValidationOutcome.reject("the CSR has no challengePassword")
        if not hmac.compare_digest(supplied, self._challenge):
            return ValidationOutcome.reject("the challengePassword is wrong")
        return ValidationOutcome.approve("static challenge matched")
