"""Sign step: apply the certificate profile and sign with the CA key.

The CA is asked for at signing time (``SignerDeps.ca``), so a rollover's switch
takes effect without a restart. A token (PKCS#11) key blocks the calling thread
for the whole C_Sign, so its issuance runs on an executor; a file key signs in
about 0.3 ms and runs inline, where a thread hop would cost more than it saves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import lru_cache, partial

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_shared.ca import CaError, CertificateProfile, PolicyViolation, issue_certificate
from scepline_shared.ca.crl import crl_distribution_url
from scepline_shared.ca.issue import new_serial, serial_hex
from scepline_shared.keys import KeyPair, SigningKey
from scepline_shared.keys.pkcs11 import HsmError, Pkcs11EcPrivateKey, Pkcs11RsaPrivateKey
from scepline_shared.log import get_logger
from scepline_shared.metrics import SIGNING_SECONDS
from scepline_shared.pipeline import Permanent, Transient, UnknownTransaction, state_after
from scepline_shared.scep import FailInfo, ScepError, load_recorded_csr
from scepline_shared.store.errors import SerialCollision
from scepline_shared.store.models import RequestState
from scepline_shared.store.repository import RequestRepository
from scepline_shared.store.views import IssuedCertificateRecord

__all__ = ["SignerDeps", "handle_sign", "issued_record", "signs_in_token"]

log = get_logger(__name__)

_SERIAL_ATTEMPTS = 3


# An HSM outage is worth retrying (the token reconnects); it is not the device's fault.
_HSM_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class SignerDeps:
    """What the sign step needs.

    ``ca``: the CA active now (e.g. ``lambda: watcher.current().material().ca``),
    called once per request. ``public_base_url``: when set, certificates carry
    the CRL distribution point ``<url>/crl/<ca key id>.crl``. ``executor`` runs
    token-key issuance (None: the loop's default executor).
    """

    repository: RequestRepository
    ca: Callable[[], KeyPair]
    profile: CertificateProfile
    public_base_url: str | None = None
    executor: Executor | None = None


def signs_in_token(key: SigningKey) -> bool:
    """Whether signing with ``key`` waits on a PKCS#11 token (so belongs off the loop)."""
    return isinstance(key, Pkcs11RsaPrivateKey | Pkcs11EcPrivateKey)


def issued_record(certificate: x509.Certificate) -> IssuedCertificateRecord:
    """What the store keeps of an issued certificate."""
    return IssuedCertificateRecord(
        serial=serial_hex(certificate.serial_number),
        issuer=certificate.issuer.rfc4514_string(),
        subject=certificate.subject.rfc4514_string(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        der=certificate.public_bytes(Encoding.DER),
    )


async def handle_sign(transaction_id: str, deps: SignerDeps) -> RequestState:
    request = await deps.repository.get(transaction_id)
    if request is None:
        raise UnknownTransaction(transaction_id)
    if request.state != RequestState.VALIDATED:
        return request.state  # already signed (redelivery) or not ours to sign
    try:
        csr = load_recorded_csr(request.csr_der)
    except ScepError as unreadable:  # ingress checked it; only a corrupted row gets here
        raise Permanent(f"stored CSR is unusable: {unreadable.failure_message}") from unreadable
    for _ in range(_SERIAL_ATTEMPTS):
        try:
            certificate = await _sign(csr, deps)
        except HsmError as outage:
            raise Transient(f"HSM unavailable: {outage}", defer=_HSM_RETRY_SECONDS) from outage
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
        record = issued_record(certificate)
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


async def _sign(csr: x509.CertificateSigningRequest, deps: SignerDeps) -> x509.Certificate:
    ca = deps.ca()
    distribution_point = (
        None if deps.public_base_url is None else _crl_url(deps.public_base_url, ca.certificate)
    )
    work = partial(_issue, csr, ca, deps.profile, distribution_point)
    if signs_in_token(ca.key):
        return await asyncio.get_running_loop().run_in_executor(deps.executor, work)
    return work()


def _issue(
    csr: x509.CertificateSigningRequest,
    ca: KeyPair,
    profile: CertificateProfile,
    distribution_point: str | None,
) -> x509.Certificate:
    started = time.perf_counter()  # measured where it runs: signing, not queueing
    certificate = issue_certificate(
        csr=csr,
        ca=ca,
        profile=profile,
        serial=new_serial(),
        signature_verified=True,  # ingress checked it over the client's own bytes
        crl_distribution_point=distribution_point,
    )
    SIGNING_SECONDS.observe(time.perf_counter() - started)
    return certificate


@lru_cache(maxsize=16)
def _crl_url(public_base_url: str, ca_certificate: x509.Certificate) -> str:
    # Per request otherwise: a SPKI encoding and a SHA-256 for the same few CAs.
    return crl_distribution_url(public_base_url, ca_certificate)
