"""Sign step: apply the certificate profile and sign with the CA key.

Every signature is accounted for before it is made. The certificate is prepared
(profile checks, serial, validity) and its to-be-signed hash computed; then one
store transaction claims the request (VALIDATED -> SIGNING) and writes the
issuance-journal entry; only then does the CA key sign; a second transaction
stores the certificate with SIGNED. A redelivered message finds the claim and
signs nothing. A claim whose certificate never got stored (the signer died, or
took longer than the claim timeout, or its token failed) is voided: its serial
is revoked, the history says why, and the request is signed again under a new
serial. So the journal always equals the recorded certificates plus the voided
serials.

Each request is issued under its endpoint's profile (``SignerDeps.profiles``).
The CA is asked for at signing time (``SignerDeps.ca``), so a rollover's switch
takes effect without a restart. A token (PKCS#11) key blocks the calling thread
for the whole C_Sign, so its signature runs on an executor; a file key signs in
about 0.3 ms and runs inline, where a thread hop would cost more than it saves.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_shared.ca import CaError, CertificateProfile, PolicyViolation
from scepline_shared.ca.crl import crl_distribution_url
from scepline_shared.ca.issue import (
    PreparedCertificate,
    new_serial,
    prepare_certificate,
    serial_hex,
)
from scepline_shared.ca.tbs import tbs_sha256_of
from scepline_shared.keys import KeyPair, SigningKey, spki_sha256_hex
from scepline_shared.keys.pkcs11 import HsmError, Pkcs11EcPrivateKey, Pkcs11RsaPrivateKey
from scepline_shared.log import bind_endpoint, get_logger
from scepline_shared.metrics import SIGNING_SECONDS
from scepline_shared.pipeline import Permanent, Transient, UnknownTransaction, request_after
from scepline_shared.scep import FailInfo, ScepError, load_recorded_csr
from scepline_shared.store.errors import SerialCollision
from scepline_shared.store.models import DEFAULT_ENDPOINT, Approval, RequestState
from scepline_shared.store.views import IssuedCertificateRecord, RequestView, SignatureClaim

from .ports import SignerStore

__all__ = ["SignerDeps", "handle_sign", "issued_record", "signs_in_token"]

log = get_logger(__name__)

_SERIAL_ATTEMPTS = 3

# An HSM outage is worth retrying (the token reconnects); it is not the device's fault.
_HSM_RETRY_SECONDS = 5.0
_UNKNOWN_ENDPOINT_RETRY_SECONDS = 30.0

# Approvals under which a request's names were checked by someone other than the
# requester, so account SANs (UPN, Intune SID) may be issued.
_NAMES_VOUCHED = frozenset({Approval.PROVIDER, Approval.RENEWAL})


@dataclass(frozen=True)
class SignerDeps:
    """What the sign step needs.

    ``ca``: the CA active now (e.g. ``lambda: watcher.current().material().ca``),
    called once per request. ``public_base_url``: when set, certificates carry
    the CRL distribution point ``<url>/crl/<ca key id>.crl``. ``executor`` runs
    token-key signatures (None: the loop's default executor). ``claim_timeout``:
    how long a claim may stand without its certificate before another signer
    voids it (far above any signing time; the sweep brings the request back).
    ``profile`` is the default endpoint's; ``profiles`` those of the others, by
    endpoint name (``profile`` answers for ``default`` unless given there).
    ``cas``: the CA of each endpoint that is not signed by ``ca`` (the default
    CA), by endpoint name.
    """

    repository: SignerStore
    ca: Callable[[], KeyPair]
    profile: CertificateProfile
    public_base_url: str | None = None
    executor: Executor | None = None
    claim_timeout: dt.timedelta = dt.timedelta(seconds=60)
    profiles: Mapping[str, CertificateProfile] = field(default_factory=dict)
    cas: Mapping[str, Callable[[], KeyPair]] = field(default_factory=dict)

    def ca_for(self, endpoint: str) -> KeyPair:
        """The CA active now for ``endpoint``'s certificates."""
        return self.cas.get(endpoint, self.ca)()

    def profile_for(self, endpoint: str) -> CertificateProfile | None:
        found = self.profiles.get(endpoint)
        if found is None and endpoint == DEFAULT_ENDPOINT:
            return self.profile
        return found


def signs_in_token(key: SigningKey) -> bool:
    """Whether signing with ``key`` waits on a PKCS#11 token (so belongs off the loop)."""
    return isinstance(key, Pkcs11RsaPrivateKey | Pkcs11EcPrivateKey)


def issued_record(
    certificate: x509.Certificate,
    *,
    issuer_key_id: str | None = None,
    renews_serial: str | None = None,
) -> IssuedCertificateRecord:
    """What the store keeps of an issued certificate."""
    return IssuedCertificateRecord(
        serial=serial_hex(certificate.serial_number),
        issuer=certificate.issuer.rfc4514_string(),
        subject=certificate.subject.rfc4514_string(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        der=certificate.public_bytes(Encoding.DER),
        issuer_key_id=issuer_key_id,
        renews_serial=renews_serial,
    )


async def handle_sign(transaction_id: str, deps: SignerDeps) -> RequestView:
    request = await deps.repository.get(transaction_id)
    if request is None:
        raise UnknownTransaction(transaction_id)
    with bind_endpoint(request.endpoint):
        return await _sign(transaction_id, request, deps)


async def _sign(transaction_id: str, request: RequestView, deps: SignerDeps) -> RequestView:
    if request.state is RequestState.SIGNING:
        voided = await _void_if_abandoned(request, deps)
        if voided is None or voided.state is not RequestState.VALIDATED:
            return await request_after(deps.repository, transaction_id, voided)
        request = voided
    if request.state is not RequestState.VALIDATED:
        return request  # already signed (redelivery) or not ours to sign
    profile = deps.profile_for(request.endpoint)
    if profile is None:
        # Another process knows the endpoint; this signer was configured before
        # it existed. Retried, then dead-lettered for an operator.
        raise Transient(
            f"endpoint {request.endpoint!r} is not configured in this signer "
            "(restart it with the configuration file that names it)",
            defer=_UNKNOWN_ENDPOINT_RETRY_SECONDS,
        )
    try:
        csr = load_recorded_csr(request.csr_der)
    except ScepError as unreadable:  # ingress checked it; only a corrupted row gets here
        raise Permanent(f"stored CSR is unusable: {unreadable.failure_message}") from unreadable
    ca = deps.ca_for(request.endpoint)
    for _ in range(_SERIAL_ATTEMPTS):
        try:
            prepared = _prepare(csr, ca, deps, profile, request.approval)
        except (PolicyViolation, CaError) as refusal:
            # PolicyViolation: the request breaks the profile. CaError: the CA
            # cannot issue (e.g. expired); the device gets a clear failure.
            return await _refuse(deps, transaction_id, refusal)
        claim = _claim(prepared, ca)
        try:
            claimed = await deps.repository.claim_signature(
                transaction_id=transaction_id, claim=claim
            )
        except SerialCollision:
            continue  # astronomically unlikely with 126 random bits; draw again
        if claimed is None:
            return await request_after(deps.repository, transaction_id, claimed)
        certificate = await _sign_claimed(transaction_id, prepared, ca, claim, deps)
        renews = request.renewal_of_serial if request.approval is Approval.RENEWAL else None
        record = issued_record(certificate, issuer_key_id=claim.issuer_key_id, renews_serial=renews)
        moved = await deps.repository.record_signed(
            transaction_id=transaction_id, certificate=record
        )
        if moved is None:
            # Our claim was voided while the key signed (we took longer than the
            # claim timeout): the serial is revoked already; this copy goes nowhere.
            log.warning("signing claim lost before the certificate was stored", serial=claim.serial)
        else:
            log.info("certificate signed", serial=record.serial, subject=record.subject)
        return await request_after(deps.repository, transaction_id, moved)
    raise RuntimeError("could not draw a unique serial number")


async def _void_if_abandoned(request: RequestView, deps: SignerDeps) -> RequestView | None:
    """A claim older than the claim timeout belongs to a signer that died (or
    hangs): void it, so the request can be signed again. A fresh one is some
    signer's work in progress: leave it (None)."""
    cutoff = dt.datetime.now(dt.UTC) - deps.claim_timeout
    if request.updated_at >= cutoff or request.cert_serial is None:
        return None
    voided = await deps.repository.void_claim(
        transaction_id=request.transaction_id,
        serial=request.cert_serial,
        why=(
            f"signing claim abandoned: no certificate stored within "
            f"{deps.claim_timeout.total_seconds():g} s"
        ),
        claimed_before=cutoff,
    )
    if voided is not None:
        log.warning("abandoned signing claim voided", serial=request.cert_serial)
    return voided


def _prepare(
    csr: x509.CertificateSigningRequest,
    ca: KeyPair,
    deps: SignerDeps,
    profile: CertificateProfile,
    approval: Approval | None,
) -> PreparedCertificate:
    base = deps.public_base_url
    distribution_point = None if base is None else _crl_url(base, ca.certificate)
    ocsp_url, ca_issuers_url = (None, None) if base is None else _access_urls(base, ca.certificate)
    return prepare_certificate(
        csr=csr,
        ca=ca,
        profile=profile,
        serial=new_serial(),
        signature_verified=True,  # ingress checked it over the client's own bytes
        crl_distribution_point=distribution_point,
        names_vouched=approval in _NAMES_VOUCHED,
        ocsp_url=ocsp_url,
        ca_issuers_url=ca_issuers_url,
    )


def _claim(prepared: PreparedCertificate, ca: KeyPair) -> SignatureClaim:
    issuer_key_id, issuer = _issuer(ca.certificate)
    return SignatureClaim(
        serial=serial_hex(prepared.serial),
        issuer_key_id=issuer_key_id,
        issuer=issuer,
        subject=prepared.subject.rfc4514_string(),
        not_before=prepared.not_before,
        not_after=prepared.not_after,
        tbs_sha256=prepared.tbs_sha256,
    )


async def _sign_claimed(
    transaction_id: str,
    prepared: PreparedCertificate,
    ca: KeyPair,
    claim: SignatureClaim,
    deps: SignerDeps,
) -> x509.Certificate:
    """The CA key's signature over the claimed TBSCertificate. A token failure
    voids the claim at once (nobody can show no signature left the token) and
    is retried; a certificate that is not what was claimed is voided too."""
    try:
        if signs_in_token(ca.key):
            loop = asyncio.get_running_loop()
            certificate = await loop.run_in_executor(deps.executor, _timed_sign, prepared, ca)
        else:
            certificate = _timed_sign(prepared, ca)
    except HsmError as outage:
        await deps.repository.void_claim(
            transaction_id=transaction_id, serial=claim.serial, why="HSM error while signing"
        )
        raise Transient(f"HSM unavailable: {outage}", defer=_HSM_RETRY_SECONDS) from outage
    if tbs_sha256_of(certificate) != claim.tbs_sha256:
        await deps.repository.void_claim(
            transaction_id=transaction_id,
            serial=claim.serial,
            why="the signed certificate differs from the claimed one",
        )
        raise RuntimeError(f"serial {claim.serial}: signed TBSCertificate is not the claimed one")
    return certificate


def _timed_sign(prepared: PreparedCertificate, ca: KeyPair) -> x509.Certificate:
    started = time.perf_counter()  # measured where it runs: signing, not queueing
    certificate = prepared.sign(ca)
    SIGNING_SECONDS.observe(time.perf_counter() - started)
    return certificate


async def _refuse(deps: SignerDeps, transaction_id: str, refusal: CaError) -> RequestView:
    moved = await deps.repository.transition(
        transaction_id=transaction_id,
        from_state=RequestState.VALIDATED,
        to_state=RequestState.FAILED,
        detail=f"not issued: {refusal}",
        fail_info=int(FailInfo.BAD_REQUEST),
        fail_reason=str(refusal),
    )
    log.info("request refused by the signer", reason=str(refusal))
    return await request_after(deps.repository, transaction_id, moved)


@lru_cache(maxsize=16)
def _issuer(ca_certificate: x509.Certificate) -> tuple[str, str]:
    """(key id, name) of a CA, per request otherwise: a SPKI encoding and a hash."""
    return spki_sha256_hex(ca_certificate.public_key()), ca_certificate.subject.rfc4514_string()


@lru_cache(maxsize=16)
def _crl_url(public_base_url: str, ca_certificate: x509.Certificate) -> str:
    # Per request otherwise: a SPKI encoding and a SHA-256 for the same few CAs.
    return crl_distribution_url(public_base_url, ca_certificate)


@lru_cache(maxsize=16)
def _access_urls(public_base_url: str, ca_certificate: x509.Certificate) -> tuple[str, str]:
    """(OCSP URL, caIssuers URL) served by ingress: ``/ocsp`` and ``/ca/<key id>.crt``."""
    base = public_base_url.rstrip("/")
    return f"{base}/ocsp", f"{base}/ca/{spki_sha256_hex(ca_certificate.public_key())}.crt"
