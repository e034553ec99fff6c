"""Validate step: ask the challenge provider whether a recorded request is genuine.

A request signed with one of our certificates is a renewal only when that
certificate is still valid, no certificate in its renewal lineage was revoked,
and the request asks for the same identity (the subject, and the same SANs or
fewer: ``SCEPLINE_RENEWAL_SAN_MATCH``). Only then may the provider approve it
without a challenge. Any other request signed by our certificate is a first
enrolment and needs a challenge like one; a RenewalReq from a certificate that
is not valid is refused.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509

from scepline_shared.ca import CertificateProfile
from scepline_shared.log import get_logger
from scepline_shared.pipeline import UnknownTransaction, request_after
from scepline_shared.scep import FailInfo, MessageType, load_recorded_csr
from scepline_shared.store.models import RequestState
from scepline_shared.store.views import RequestView

from .challenge import ChallengeValidator, ValidationRequest
from .ports import ValidatorStore

__all__ = ["ValidatorDeps", "handle_validate"]

log = get_logger(__name__)


@dataclass(frozen=True)
class ValidatorDeps:
    repository: ValidatorStore
    challenge: ChallengeValidator
    # The issuance profile: a renewal is compared by the names it would be issued.
    profile: CertificateProfile = field(default_factory=CertificateProfile)
    # True: a renewal must ask for exactly the renewed certificate's SANs.
    exact_renewal_sans: bool = False


async def handle_validate(transaction_id: str, deps: ValidatorDeps) -> RequestView:
    request = await deps.repository.get(transaction_id)
    if request is None:
        raise UnknownTransaction(transaction_id)
    if request.state != RequestState.RECEIVED:
        return request  # already handled: a redelivery or a duplicate message
    csr = load_recorded_csr(request.csr_der)
    renewed, not_renewable = await _renewed_certificate(deps.repository, request)
    if request.message_type == MessageType.RENEWAL_REQ and renewed is None:
        reason = "RenewalReq must be signed by a valid certificate this CA issued"
        return await _reject(deps, transaction_id, f"{reason}: {not_renewable}")
    identity_change = None
    if renewed is not None:
        identity_change = deps.profile.renewal_changes(
            csr, renewed, exact_sans=deps.exact_renewal_sans
        )
    keeps_identity = renewed is not None and identity_change is None
    outcome = await deps.challenge.validate(
        ValidationRequest(
            transaction_id=transaction_id,
            csr=csr,
            renewal_of_serial=request.renewal_of_serial if keeps_identity else None,
            csr_der=request.csr_der,
            scep_transaction_id=request.scep_transaction_id,
            received_at=request.created_at,
        )
    )
    if not outcome.approved:
        reason = outcome.reason
        if identity_change is not None:
            reason = (
                f"not a renewal of {request.renewal_of_serial} ({identity_change}), "
                f"so it needs a challenge: {reason}"
            )
        return await _reject(deps, transaction_id, reason, provider_code=outcome.provider_code)
    moved = await deps.repository.transition(
        transaction_id=transaction_id,
        from_state=RequestState.RECEIVED,
        to_state=RequestState.VALIDATED,
        detail=f"{outcome.reason or 'approved'} ({outcome.approval.value})",
        provider_code=outcome.provider_code,
        approval=outcome.approval,
    )
    if moved is not None:
        log.info("request validated", reason=outcome.reason, approval=outcome.approval.value)
    return await request_after(deps.repository, transaction_id, moved)


async def _reject(
    deps: ValidatorDeps, transaction_id: str, reason: str, provider_code: str | None = None
) -> RequestView:
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
    return await request_after(deps.repository, transaction_id, moved)


async def _renewed_certificate(
    repository: ValidatorStore, request: RequestView
) -> tuple[x509.Certificate | None, str]:
    """The certificate of ours that signed the request, if it may be renewed,
    else None and why not."""
    serial = request.renewal_of_serial
    if serial is None:
        return None, "it is not signed by a certificate this CA issued"
    stored = await repository.get_certificate(serial)
    # The same certificate, not merely the same serial: only a recorded one counts.
    if stored is None or stored.der is None or stored.der != request.signer_cert_der:
        return None, f"certificate {serial} is not one this CA recorded"
    if stored.not_after < dt.datetime.now(dt.UTC):
        return None, f"certificate {serial} has expired"
    revoked = await repository.revoked_in_lineage(serial)
    if revoked == serial:
        return None, f"certificate {serial} is revoked"
    if revoked is not None:
        return None, f"certificate {revoked}, which {serial} was renewed from, is revoked"
    return x509.load_der_x509_certificate(stored.der), ""
