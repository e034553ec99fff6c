"""Validate step: ask the challenge provider whether a recorded request is genuine."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from scepline_shared.challenge import ChallengeValidator, ValidationRequest
from scepline_shared.log import get_logger
from scepline_shared.pipeline import UnknownTransaction, state_after
from scepline_shared.scep import FailInfo, MessageType, load_recorded_csr
from scepline_shared.store.models import RequestState
from scepline_shared.store.repository import RequestRepository

__all__ = ["ValidatorDeps", "handle_validate"]

log = get_logger(__name__)


@dataclass(frozen=True)
class ValidatorDeps:
    repository: RequestRepository
    challenge: ChallengeValidator


async def handle_validate(transaction_id: str, deps: ValidatorDeps) -> RequestState:
    request = await deps.repository.get(transaction_id)
    if request is None:
        raise UnknownTransaction(transaction_id)
    if request.state != RequestState.RECEIVED:
        return request.state  # already handled: a redelivery or a duplicate message
    renewal_of = await _valid_renewal_serial(deps.repository, request.renewal_of_serial)
    if request.message_type == MessageType.RENEWAL_REQ and renewal_of is None:
        reason = "RenewalReq must be signed by a valid certificate this CA issued"
        return await _reject(deps, transaction_id, reason)
    outcome = await deps.challenge.validate(
        ValidationRequest(
            transaction_id=transaction_id,
            csr=load_recorded_csr(request.csr_der),
            renewal_of_serial=renewal_of,
            csr_der=request.csr_der,
            scep_transaction_id=request.scep_transaction_id,
            received_at=request.created_at,
        )
    )
    if not outcome.approved:
        return await _reject(
            deps, transaction_id, outcome.reason, provider_code=outcome.provider_code
        )
    moved = await deps.repository.transition(
        transaction_id=transaction_id,
        from_state=RequestState.RECEIVED,
        to_state=RequestState.VALIDATED,
        detail=outcome.reason or "approved",
        provider_code=outcome.provider_code,
    )
    if moved is not None:
        log.info("request validated", reason=outcome.reason)
    return await state_after(deps.repository, transaction_id, moved)


async def _reject(
    deps: ValidatorDeps, transaction_id: str, reason: str, provider_code: str | None = None
) -> RequestState:
    moved = await deps.repository.transition(
        transaction_id=transaction_id,
        from_state=RequestState.RECEIVED,
        to_state=RequestState.REJECTED,
        detail=reason,
        fail_info=int(FailInfo.BAD_REQUEST),
        fail_reason=reason,
        provider_code=provider_code,
    )
    if moved is not None:
        log.info("request rejected", reason=reason, provider_code=provider_code)
    return await state_after(deps.repository, transaction_id, moved)


async def _valid_renewal_serial(repository: RequestRepository, serial: str | None) -> str | None:
    """The serial if it names a certificate we issued that is unexpired and unrevoked."""
    if serial is None:
        return None
    certificate = await repository.get_certificate(serial)
    if certificate is None or certificate.revoked_at is not None:
        return None
    if certificate.not_after < dt.datetime.now(dt.UTC):
        return None
    return serial
