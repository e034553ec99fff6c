"""Intune as the challenge provider: Intune itself judges every request.

The challengePassword is Intune's opaque, signed blob; the CA only checks that
it is there, then sends the client's CSR bytes to validateRequest. Only
``Success`` approves. Renewals are validated too: Intune devices renew with a
fresh challenge, and a certificate we issued says nothing about whether the
device is still enrolled and targeted by the profile.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from scepline_shared.intune import (
    IntuneClient,
    IntuneConfigurationError,
    IntuneError,
    IntuneUnavailable,
)
from scepline_shared.log import get_logger
from scepline_shared.pipeline import Transient
from scepline_shared.store.models import Approval

from .base import ValidationOutcome, ValidationRequest
from .static import challenge_password

__all__ = ["IntuneChallengeValidator"]

log = get_logger(__name__)

CHALLENGE_PASSWORD_MISSING = "ChallengePasswordMissing"  # noqa: S105 - an Intune code


class IntuneChallengeValidator:
    def __init__(
        self,
        client: IntuneClient,
        *,
        deadline: dt.timedelta = dt.timedelta(minutes=50),
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._client = client
        self._deadline = deadline
        self._clock = clock

    async def validate(self, request: ValidationRequest) -> ValidationOutcome:
        if challenge_password(request.csr) is None:
            # Intune would answer the same; no need to spend a call on it
            # (docs/specs/intune-api.md, "The device's challenge").
            return ValidationOutcome.reject(
                "the CSR has no challengePassword", provider_code=CHALLENGE_PASSWORD_MISSING
            )
        if not request.csr_der:
            raise ValueError("the Intune provider needs the CSR bytes as the client sent them")
        try:
            result = await self._client.validate_request(
                transaction_id=request.client_transaction_id, csr_der=request.csr_der
            )
        except IntuneUnavailable as unavailable:
            if self._expired(request):
                # The device's challenge is about to expire anyway: fail closed
                # rather than keep the device waiting on an answer that cannot help.
                return ValidationOutcome.reject(f"Intune unavailable: {unavailable.message}")
            raise Transient(
                f"Intune unavailable: {unavailable.message}", defer=unavailable.retry_after
            ) from unavailable
        except IntuneConfigurationError as misconfigured:
            log.error("intune provider misconfigured", error=misconfigured.message)
            return ValidationOutcome.reject(f"Intune configuration error: {misconfigured.message}")
        except IntuneError as failed:  # IntuneProtocolError: unusable answer
            return ValidationOutcome.reject(f"Intune call failed: {failed.message}")
        if result.ok:
            # Intune checks the CSR's names against the profile it targeted.
            return ValidationOutcome.approve(
                "Intune validated the request", result.code, approval=Approval.PROVIDER
            )
        reason = f"Intune rejected the request: {result.code}"
        if result.error_description:
            reason = f"{reason}: {result.error_description[:300]}"
        return ValidationOutcome.reject(reason, provider_code=result.code)

    def _expired(self, request: ValidationRequest) -> bool:
        if request.received_at is None:
            return False
        return self._clock() - request.received_at >= self._deadline
