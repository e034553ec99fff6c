"""Sign step: apply the certificate profile and sign with the CA key."""

from __future__ import annotations

import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_shared.ca import CaError, CertificateProfile, PolicyViolation, issue_certificate
from scepline_shared.ca.issue import new_serial, serial_hex
from scepline_shared.keys import KeyPair
from scepline_shared.log import get_logger
from scepline_shared.metrics import SIGNING_SECONDS
from scepline_shared.pipeline import Permanent, UnknownTransaction, state_after
from scepline_shared.scep import FailInfo, ScepError, load_certification_request
from scepline_shared.store.errors import SerialCollision
from scepline_shared.store.models import RequestState
from scepline_shared.store.repository import RequestRepository
from scepline_shared.store.views import IssuedCertificateRecord

__all__ = ["SignerDeps", "handle_sign"]

log = get_logger(__name__)

_SERIAL_ATTEMPTS = 3


@dataclass(frozen=True)
class SignerDeps:
    repository: RequestRepository
    ca: KeyPair
    profile: CertificateProfile


async def handle_sign(transaction_id: str, deps: SignerDeps) -> RequestState:
    request = await deps.repository.get(transaction_id)
    if request is None:
        raise UnknownTransaction(transaction_id)
    if request.state != RequestState.VALIDATED:
        return request.state  # already signed (redelivery) or not ours to sign
    try:
        csr = load_certification_request(request.csr_der).csr
    except ScepError as unreadable:  # ingress checked it; only a corrupted row gets here
        raise Permanent(f"stored CSR is unusable: {unreadable.failure_message}") from unreadable
    for _ in range(_SERIAL_ATTEMPTS):
        try:
            certificate = _sign(csr, deps)
        except (PolicyViolation, CaError) as refusal:
            # PolicyViolation: the request breaks the profile. CaError: the CA
            # cannot issue (e.g. expired); the device gets a clear failure.
            moved = await deps.repository.transition(
                transaction_id=transaction_id,
                from_state=RequestState.VALIDATED,
                to_state=RequestState.FAILED,
                detail=f"not issued: {refusal}",
                fail_info=int(FailInfo.BAD_REQUEST),
                fail_reason=str(refusal),
            )
            log.info("request refused by the signer", reason=str(refusal))
            return await state_after(deps.repository, transaction_id, moved)
        record = IssuedCertificateRecord(
            serial=serial_hex(certificate.serial_number),
            issuer=certificate.issuer.rfc4514_string(),
            subject=certificate.subject.rfc4514_string(),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            der=certificate.public_bytes(Encoding.DER),
        )
        try:
            moved = await deps.repository.issue_certificate(
                transaction_id=transaction_id, certificate=record
            )
        except SerialCollision:
            continue  # astronomically unlikely with 126 random bits; draw again
        if moved is not None:
            log.info("certificate signed", serial=record.serial, subject=record.subject)
        return await state_after(deps.repository, transaction_id, moved)
    raise RuntimeError("could not draw a unique serial number")


def _sign(csr: x509.CertificateSigningRequest, deps: SignerDeps) -> x509.Certificate:
    started = time.perf_counter()
    certificate = issue_certificate(
        csr=csr,
        ca=deps.ca,
        profile=deps.profile,
        serial=new_serial(),
        signature_verified=True,  # ingress checked it over the client's own bytes
    )
    SIGNING_SECONDS.observe(time.perf_counter() - started)
    return certificate
