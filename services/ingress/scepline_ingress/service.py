"""The four SCEP operations over bytes: no HTTP, no Request objects.

``ScepService`` decodes a pkiMessage with the codec, records enrolments in the
state store, hands them to the pipeline and answers from the store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_shared.ca.issue import serial_hex
from scepline_shared.keys import spki_sha256_hex
from scepline_shared.log import bind_transaction, get_logger
from scepline_shared.metrics import REQUESTS_IN_FLIGHT
from scepline_shared.pipeline import Pipeline
from scepline_shared.scep import (
    BadCertId,
    BadRequest,
    BadTime,
    CertificationRequest,
    ContentEncryption,
    DisallowedAlgorithm,
    FailInfo,
    IssuerAndSerial,
    MessageHeader,
    MessageType,
    PkiMessage,
    PkiStatus,
    build_cert_rep,
    build_degenerate,
    open_envelope,
    parse_message_data,
    read_pki_message,
)
from scepline_shared.store.models import RequestState
from scepline_shared.store.repository import RequestRepository, RequestView

from .identity import ScepIdentity

__all__ = ["ScepOptions", "ScepReply", "ScepService"]

log = get_logger(__name__)

_TERMINAL = {RequestState.ISSUED, RequestState.REJECTED, RequestState.FAILED}


@dataclass(frozen=True)
class ScepOptions:
    allow_des: bool = False
    max_clock_skew: dt.timedelta = dt.timedelta(hours=24)
    include_chain_in_cert_rep: bool = False
    sync_wait_seconds: float = 20.0


@dataclass(frozen=True)
class ScepReply:
    """A CertRep and what it says, for the HTTP layer's metrics."""

    body: bytes
    message_type: MessageType
    status: PkiStatus
    fail_info: FailInfo | None = None


def request_key(transaction_id: str, renewal_of: str | None) -> str:
    """How the store names a request.

    RFC 8894 clients derive the transactionID from the public key, so renewing
    with the same key repeats the transactionID of the first enrolment. A
    message signed with one of our certificates is therefore its own request,
    named after that certificate; a retransmission of either maps to the same
    name again, and a poll is signed like the request it polls for.
    """
    return transaction_id if renewal_of is None else f"{transaction_id}|renew:{renewal_of}"


def requester_key_id(certificate: x509.Certificate) -> str:
    """Who made a request: the signer's public key, not its (transient) certificate."""
    return spki_sha256_hex(certificate.public_key())


class ScepService:
    def __init__(
        self,
        *,
        identity: ScepIdentity,
        repository: RequestRepository,
        pipeline: Pipeline,
        options: ScepOptions,
    ) -> None:
        self._identity = identity
        self._repository = repository
        self._pipeline = pipeline
        self._options = options
        allowed = [e for e in ContentEncryption if e is not ContentEncryption.DES_CBC]
        if options.allow_des:
            allowed.append(ContentEncryption.DES_CBC)
        self._allowed_encryption = tuple(allowed)

    # -- GetCACaps / GetCACert / GetNextCACert ---------------------------------

    def capabilities(self) -> Sequence[str]:
        caps = [
            "POSTPKIOperation",
            "SCEPStandard",
            "AES",
            "DES3",
            "SHA-1",
            "SHA-256",
            # strongSwan 5.9.8 tests capability bits wrongly and needs SHA-384
            # listed to use SHA-256 renewals; we really support it.
            "SHA-384",
            "SHA-512",
            "Renewal",
        ]
        if self._identity.next_ca_certificate is not None:
            caps.append("GetNextCACert")
        return caps

    def ca_certificates(self) -> bytes:
        """The RA and CA certificates as a degenerate certs-only PKCS#7."""
        return build_degenerate([self._identity.ra_certificate, *self._identity.ca_certificates])

    def next_ca_certificate(self) -> bytes | None:
        next_ca = self._identity.next_ca_certificate
        return None if next_ca is None else build_degenerate([next_ca])

    # -- PKIOperation ---------------------------------------------------------

    async def pki_operation(self, der: bytes) -> ScepReply:
        """Answer one pkiMessage. Raises ScepError for the error mapper."""
        message = read_pki_message(der)
        with bind_transaction(message.transaction_id):
            self._check_signing_time(message)
            if message.message_type is MessageType.CERT_REP:
                raise BadRequest("a CertRep is not a request").with_header(message.header)
            try:
                data, encryption = open_envelope(
                    message,
                    recipient_key=self._identity.ra_key,
                    recipient=self._identity.ra_certificate,
                    allowed=self._allowed_encryption,
                )
            except DisallowedAlgorithm as refused:
                log.warning(
                    "refused a disallowed content encryption; set "
                    "SCEPLINE_SCEP_ALLOW_DES=true to accept single DES",
                    algorithm=refused.algorithm,
                )
                raise
            content = parse_message_data(message, data)
            if isinstance(content, CertificationRequest):
                return await self._enrol(message, content, encryption)
            if message.message_type is MessageType.CERT_POLL:
                return await self._poll(message, encryption)
            if message.message_type is MessageType.GET_CERT:
                return await self._get_cert(message, content, encryption)
            return await self._get_crl(message, content, encryption)

    def failure(self, header: MessageHeader, fail_info: FailInfo, text: str) -> ScepReply:
        body = build_cert_rep(
            request=header,
            status=PkiStatus.FAILURE,
            fail_info=fail_info,
            fail_info_text=text,
            signer_key=self._identity.ra_key,
            signer_certificate=self._identity.ra_certificate,
        )
        return ScepReply(
            body=body,
            message_type=header.message_type or MessageType.CERT_REP,
            status=PkiStatus.FAILURE,
            fail_info=fail_info,
        )

    async def _enrol(
        self,
        message: PkiMessage,
        request: CertificationRequest,
        encryption: ContentEncryption,
    ) -> ScepReply:
        key_id = requester_key_id(message.signer_certificate)
        signer = message.signer_certificate
        renewal_of = self._renewal_of(signer)
        if message.message_type is MessageType.RENEWAL_REQ and renewal_of is None:
            raise BadRequest(
                "RenewalReq must be signed with a certificate this CA issued"
            ).with_header(message.header)
        recorded = await self._repository.record_request(
            transaction_id=request_key(message.transaction_id, renewal_of),
            signer_key_id=key_id,
            message_type=int(message.message_type),
            csr_der=request.der,
            signer_cert_der=signer.public_bytes(Encoding.DER),
            subject=request.csr.subject.rfc4514_string(),
            renewal_of_serial=renewal_of,
            queued=True,  # handed to the pipeline just below
        )
        stored = recorded.request
        if stored.signer_key_id != key_id:
            raise BadRequest(
                "transactionID is already in use by another requester key"
            ).with_header(message.header)
        if recorded.created:
            log.info(
                "enrolment recorded", message_type=message.message_type.name, renewal_of=renewal_of
            )
            await self._pipeline.submit(stored.transaction_id)
        else:
            log.info("retransmitted request", state=stored.state)
        stored = await self._await_outcome(stored)
        return self._answer(message, stored, encryption)

    async def _poll(self, message: PkiMessage, encryption: ContentEncryption) -> ScepReply:
        renewal_of = self._renewal_of(message.signer_certificate)
        request = await self._repository.get(request_key(message.transaction_id, renewal_of))
        if request is None:
            raise BadCertId("no request with this transactionID").with_header(message.header)
        if request.signer_key_id != requester_key_id(message.signer_certificate):
            raise BadRequest("this transaction belongs to another requester key").with_header(
                message.header
            )
        return self._answer(message, request, encryption)

    async def _get_cert(
        self, message: PkiMessage, content: object, encryption: ContentEncryption
    ) -> ScepReply:
        assert isinstance(content, IssuerAndSerial)
        certificate = await self._repository.get_certificate(serial_hex(content.serial_number))
        if certificate is None or not self._is_our_issuer(content.issuer):
            raise BadCertId("no certificate with this issuer and serial").with_header(
                message.header
            )
        return self._success(
            message, encryption, certificates=[x509.load_der_x509_certificate(certificate.der)]
        )

    async def _get_crl(
        self, message: PkiMessage, content: object, encryption: ContentEncryption
    ) -> ScepReply:
        assert isinstance(content, IssuerAndSerial)
        if not self._is_our_issuer(content.issuer):
            raise BadCertId("the certificate was not issued by this CA").with_header(message.header)
        crl = await self._repository.latest_crl(self._ca_key_id())
        if crl is None:
            raise BadRequest("no CRL has been published yet").with_header(message.header)
        return self._success(message, encryption, crls=[x509.load_der_x509_crl(crl.der)])

    # -- helpers ----------------------------------------------------------------

    async def _await_outcome(self, request: RequestView) -> RequestView:
        if request.state in _TERMINAL or self._options.sync_wait_seconds <= 0:
            return request
        REQUESTS_IN_FLIGHT.inc()
        try:
            await self._pipeline.wait_for_outcome(
                request.transaction_id, self._options.sync_wait_seconds
            )
        finally:
            REQUESTS_IN_FLIGHT.dec()
        return await self._repository.get(request.transaction_id) or request

    def _answer(
        self, message: PkiMessage, request: RequestView, encryption: ContentEncryption
    ) -> ScepReply:
        if request.state == RequestState.ISSUED and request.cert_der is not None:
            certificate = x509.load_der_x509_certificate(request.cert_der)
            chain = (
                self._identity.ca_certificates if self._options.include_chain_in_cert_rep else ()
            )
            return self._success(message, encryption, certificates=[certificate, *chain])
        if request.state in (RequestState.REJECTED, RequestState.FAILED):
            fail_info = (
                FailInfo(request.fail_info)
                if request.fail_info is not None
                else (FailInfo.BAD_REQUEST)
            )
            return self.failure(message.header, fail_info, request.fail_reason or "refused")
        body = build_cert_rep(
            request=message.header,
            status=PkiStatus.PENDING,
            signer_key=self._identity.ra_key,
            signer_certificate=self._identity.ra_certificate,
        )
        return ScepReply(body=body, message_type=message.message_type, status=PkiStatus.PENDING)

    def _success(
        self,
        message: PkiMessage,
        encryption: ContentEncryption,
        *,
        certificates: Sequence[x509.Certificate] = (),
        crls: Sequence[x509.CertificateRevocationList] = (),
    ) -> ScepReply:
        body = build_cert_rep(
            request=message.header,
            status=PkiStatus.SUCCESS,
            signer_key=self._identity.ra_key,
            signer_certificate=self._identity.ra_certificate,
            certificates=certificates,
            crls=crls,
            recipient=message.signer_certificate,
            encryption=encryption,
        )
        return ScepReply(body=body, message_type=message.message_type, status=PkiStatus.SUCCESS)

    def _check_signing_time(self, message: PkiMessage) -> None:
        if message.signing_time is None:
            return
        skew = abs(dt.datetime.now(dt.UTC) - message.signing_time)
        if skew > self._options.max_clock_skew:
            raise BadTime(
                f"signingTime is {int(skew.total_seconds())} s away from the CA's clock"
            ).with_header(message.header)

    def _renewal_of(self, signer: x509.Certificate) -> str | None:
        """The serial of our certificate that signed the message, if it is one."""
        return serial_hex(signer.serial_number) if self._identity.issued_by_us(signer) else None

    def _is_our_issuer(self, issuer: x509.Name) -> bool:
        return any(issuer == ca.subject for ca in self._identity.ca_certificates)

    def _ca_key_id(self) -> str:
        return spki_sha256_hex(self._identity.ca_certificate.public_key())
