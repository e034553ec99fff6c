"""Validate step: ask the request's endpoint's challenge provider whether a
recorded request is genuine.

A request signed with one of our certificates is a renewal only when that
certificate is still valid, no certificate in its renewal lineage was revoked,
it was issued at the same endpoint (unless the endpoint's ``renewal`` says
"any-endpoint"; "never" turns challenge-less renewals off), and the request
asks for the same identity (the subject, and the same SANs or fewer:
``renewal_san_match``). Only then may the provider approve it without a
challenge. Any other request signed by our certificate is a first enrolment
and needs a challenge like one; a RenewalReq from a certificate that is not
valid is refused.

A provider that uses something up (a one-time challenge) or asks an operator
(manual) gets only requests the endpoint's certificate profile allows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509

from scepline_shared.ca import CertificateProfile, PolicyViolation
from scepline_shared.ca.profile import requested_sans
from scepline_shared.log import bind_endpoint, get_logger
from scepline_shared.pipeline import Transient, UnknownTransaction, request_after
from scepline_shared.scep import FailInfo, MessageType, load_recorded_csr
from scepline_shared.store.models import RequestState
from scepline_shared.store.views import RequestView

from .challenge import ChallengeValidator, ValidationRequest, checks_profile_first
from .ports import ValidatorStore

__all__ = ["EndpointPolicy", "ValidatorDeps", "handle_validate", "profile_refusal"]

log = get_logger(__name__)

# How long a validator waits for its configuration to know an endpoint a
# request names (a validator started before the file named it) before retrying.
_UNKNOWN_ENDPOINT_RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class EndpointPolicy:
    """How requests of one endpoint are validated."""

    challenge: ChallengeValidator
    # The issuance profile: a renewal is compared by the names it would be issued.
    profile: CertificateProfile = field(default_factory=CertificateProfile)
    # True: a renewal must ask for exactly the renewed certificate's SANs.
    exact_renewal_sans: bool = False
    # Which certificates renew without a challenge: this endpoint's, any, none.
    renewal: str = "same-endpoint"


@dataclass(frozen=True)
class ValidatorDeps:
    repository: ValidatorStore
    endpoints: Mapping[str, EndpointPolicy]


async def handle_validate(transaction_id: str, deps: ValidatorDeps) -> RequestView:
    request = await deps.repository.get(transaction_id)
    if request is None:
        raise UnknownTransaction(transaction_id)
    if request.state != RequestState.RECEIVED:
        return request  # already handled: a redelivery or a duplicate message
    policy = deps.endpoints.get(request.endpoint)
    if policy is None:
        # Another process knows the endpoint (it recorded the request); this
        # one was configured before it existed. Retry, then dead-letter.
        raise Transient(
            f"endpoint {request.endpoint!r} is not configured in this validator "
            "(restart it with the configuration file that names it)",
            defer=_UNKNOWN_ENDPOINT_RETRY_SECONDS,
        )
    with bind_endpoint(request.endpoint):
        return await _validate(transaction_id, request, policy, deps)


async def _validate(
    transaction_id: str, request: RequestView, policy: EndpointPolicy, deps: ValidatorDeps
) -> RequestView:
    csr = load_recorded_csr(request.csr_der)
    renewed, not_renewable, signed_by_ours = await _renewed_certificate(
        deps.repository, request, policy
    )
    if request.message_type == MessageType.RENEWAL_REQ and not signed_by_ours:
        reason = "RenewalReq must be signed by a valid certificate this CA issued"
        return await _reject(deps, transaction_id, f"{reason}: {not_renewable}")
    identity_change = None
    if renewed is not None:
        identity_change = policy.profile.renewal_changes(
            csr, renewed, exact_sans=policy.exact_renewal_sans
        )
    keeps_identity = renewed is not None and identity_change is None
    if not keeps_identity and checks_profile_first(policy.challenge):
        refused = profile_refusal(policy.profile, csr)
        if refused is not None:
            reason = f"the profile refuses it: {refused}"
            if renewed is None and signed_by_ours:
                reason = f"{reason} (not a renewal here: {not_renewable})"
            return await _reject(deps, transaction_id, reason)
    outcome = await policy.challenge.validate(
        ValidationRequest(
            transaction_id=transaction_id,
            csr=csr,
            renewal_of_serial=request.renewal_of_serial if keeps_identity else None,
            csr_der=request.csr_der,
            scep_transaction_id=request.scep_transaction_id,
            received_at=request.created_at,
            endpoint=request.endpoint,
        )
    )
    if outcome.awaiting_approval:
        moved = await deps.repository.transition(
            transaction_id=transaction_id,
            from_state=RequestState.RECEIVED,
            to_state=RequestState.AWAITING_APPROVAL,
            detail=outcome.reason,
        )
        if moved is not None:
            log.info("request awaits an operator's approval", subject=request.subject)
        return await request_after(deps.repository, transaction_id, moved)
    if not outcome.approved:
        reason = outcome.reason
        if identity_change is not None:
            reason = (
                f"not a renewal of {request.renewal_of_serial} ({identity_change}), "
                f"so it needs a challenge: {reason}"
            )
        elif renewed is None and signed_by_ours:
            reason = f"{reason} (not a renewal here: {not_renewable})"
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


def profile_refusal(profile: CertificateProfile, csr: x509.CertificateSigningRequest) -> str | None:
    """Why the signer would refuse ``csr`` under ``profile`` whoever vouched for
    it (key, names, rules, EKUs), or None. Account SANs (UPN, SID) are judged as
    unvouched: neither a one-time challenge nor an operator vouches for them."""
    try:
        profile.check_public_key(csr.public_key())
        subject = profile.issued_subject(csr)
        sans = profile.filter_sans(requested_sans(csr))
        profile.check_names(subject, sans, ca_subject=x509.Name([]), names_vouched=False)
        if not sans and not list(subject):
            return "the CSR has an empty subject and no allowed subjectAltName"
        profile.check_rules(subject, sans)
        profile.issued_extended_key_usage(csr)
    except PolicyViolation as refused:
        return refused.reason
    except ValueError as unreadable:  # a public key cryptography cannot load
        return f"the CSR's public key is unsupported: {unreadable}"
    return None


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
    repository: ValidatorStore, request: RequestView, policy: EndpointPolicy
) -> tuple[x509.Certificate | None, str, bool]:
    """The certificate of ours that signed the request, if it may be renewed
    here, else None and why not; and whether the request is signed by a valid
    certificate of ours at all (a RenewalReq must be)."""
    serial = request.renewal_of_serial
    if serial is None:
        return None, "it is not signed by a certificate this CA issued", False
    stored = await repository.get_certificate(serial)
    # The same certificate, not merely the same serial: only a recorded one counts.
    if stored is None or stored.der is None or stored.der != request.signer_cert_der:
        return None, f"certificate {serial} is not one this CA recorded", False
    if stored.not_after < dt.datetime.now(dt.UTC):
        return None, f"certificate {serial} has expired", False
    revoked = await repository.revoked_in_lineage(serial)
    if revoked == serial:
        return None, f"certificate {serial} is revoked", False
    if revoked is not None:
        return None, f"certificate {revoked}, which {serial} was renewed from, is revoked", False
    if policy.renewal == "never":
        return None, f"endpoint {request.endpoint} renews nothing without a challenge", True
    if policy.renewal == "same-endpoint" and stored.endpoint != request.endpoint:
        return (
            None,
            f"certificate {serial} was issued at endpoint {stored.endpoint}, "
            f"not {request.endpoint}",
            True,
        )
    return x509.load_der_x509_certificate(stored.der), "", True
