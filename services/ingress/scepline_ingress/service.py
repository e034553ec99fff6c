"""The four SCEP operations over bytes: no HTTP, no Request objects.

``ScepService`` decodes a pkiMessage with the codec, records enrolments in the
state store, hands them to the pipeline and answers from the store.

Every operation is for one SCEP endpoint (the HTTP binding resolves it from
the path): a request records it, and its key in the store names it
(``request_key``), so a poll or a retransmission is answered only at the
endpoint it was sent to.

Each operation asks its endpoint's identity source (the endpoint's CA: every
endpoint may have its own) once, at its start, for the current RA and CA
certificates (a CA rollover changes them while ingress runs). A request
is opened with whichever RA key its envelope names, and answered by that RA,
whose certificate the client already holds; a request that could not be opened
is answered by the active RA.

Codec work that uses the RA key (opening the envelope, signing the CertRep) runs
in a thread when the key is in a PKCS#11 token, since each such call waits for
the token; file keys run inline, where a thread would cost more than it saves.
``_codec`` is the one place that decides.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_shared.ca.issue import serial_hex
from scepline_shared.keys import spki_sha256_hex
from scepline_shared.log import bind_endpoint, bind_transaction, get_logger
from scepline_shared.metrics import REQUESTS_IN_FLIGHT
from scepline_shared.pipeline import Pipeline, answer_now
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
    ScepError,
    build_cert_rep,
    parse_message_data,
    read_pki_message,
)
from scepline_shared.scep.message import OpenedEnvelope, open_envelope_for
from scepline_shared.store.models import DEFAULT_ENDPOINT, RequestState
from scepline_shared.store.views import CrlView, RequestView
from scepline_shared.store.views import request_key as _request_key

from .identity import (
    IdentitySource,
    Recipient,
    ScepIdentity,
    blocks_in_token,
    static_identities,
)
from .limits import Throttled, TokenBucket
from .ports import IngressStore

__all__ = ["ScepOptions", "ScepReply", "ScepService"]

T = TypeVar("T")

# Token calls are serialised by the token's lock; a few threads let the pure
# Python parts of several requests overlap with one request's token call.
_CODEC_THREADS = 4

log = get_logger(__name__)


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


def request_key(
    transaction_id: str, renewal_of: str | None, endpoint: str = DEFAULT_ENDPOINT
) -> str:
    """How the store names a request (``scepline_shared.store.views.request_key``).

    RFC 8894 clients derive the transactionID from the public key, so renewing
    with the same key repeats the transactionID of the first enrolment. A
    message signed with one of our certificates is therefore its own request,
    named after that certificate, and a request at an endpoint other than the
    default one is named after the endpoint; a retransmission maps to the same
    name again, and a poll is signed like the request it polls for.
    """
    return _request_key(transaction_id, renewal_of, endpoint)


def _for_the_operator(error: ScepError) -> str:
    """A refusal as `scepline request show` tells it: what the client was told
    and, for a cipher this deployment refuses, the setting that accepts it."""
    if isinstance(error, DisallowedAlgorithm):
        return (
            f"{error.failure_message} (RFC 8894 forbids single DES; "
            "SCEPLINE_SCEP_ALLOW_DES=true accepts it)"
        )
    return error.failure_message


def requester_key_id(certificate: x509.Certificate) -> str:
    """Who made a request: the signer's public key, not its (transient) certificate."""
    return spki_sha256_hex(certificate.public_key())


@dataclass(frozen=True)
class _Exchange:
    """One decrypted request and how to answer it."""

    message: PkiMessage
    encryption: ContentEncryption  # the client's: the reply uses the same
    reply_as: Recipient  # the RA the client encrypted to
    identity: ScepIdentity
    endpoint: str = DEFAULT_ENDPOINT


class ScepService:
    def __init__(
        self,
        *,
        identities: IdentitySource | ScepIdentity,
        repository: IngressStore,
        pipeline: Pipeline,
        options: ScepOptions,
        endpoint_identities: Mapping[str, IdentitySource] | None = None,
        enrolment_limits: Mapping[str, int] | None = None,
        sync_waits: Mapping[str, float] | None = None,
    ) -> None:
        """``identities``: the default CA's; ``endpoint_identities``: the identity
        of each endpoint whose CA is another (by endpoint name).
        ``enrolment_limits``: new enrolments per minute of the endpoints that have
        a limit; ``sync_waits``: the endpoints that wait for an outcome another
        time than ``options.sync_wait_seconds``."""
        self._buckets = {
            endpoint: TokenBucket(per_minute)
            for endpoint, per_minute in (enrolment_limits or {}).items()
            if per_minute > 0
        }
        self._sync_waits = dict(sync_waits or {})
        self._identities: IdentitySource = (
            static_identities(identities) if isinstance(identities, ScepIdentity) else identities
        )
        self._by_endpoint = dict(endpoint_identities or {})
        self._repository = repository
        self._pipeline = pipeline
        self._options = options
        allowed = [e for e in ContentEncryption if e is not ContentEncryption.DES_CBC]
        if options.allow_des:
            allowed.append(ContentEncryption.DES_CBC)
        self._allowed_encryption = tuple(allowed)
        self._executor: ThreadPoolExecutor | None = None

    # -- GetCACaps / GetCACert / GetNextCACert / CRL -----------------------------

    def _identity(self, endpoint: str) -> ScepIdentity:
        return self._by_endpoint.get(endpoint, self._identities)()

    def _all_identities(self) -> list[ScepIdentity]:
        return [self._identities(), *(source() for source in self._by_endpoint.values())]

    def capabilities(self, endpoint: str = DEFAULT_ENDPOINT) -> Sequence[str]:
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
        if self._identity(endpoint).next_ca_response is not None:
            caps.append("GetNextCACert")
        return caps

    def ca_certificates(self, endpoint: str = DEFAULT_ENDPOINT) -> bytes:
        """The endpoint's active RA and CA certificates as a degenerate certs-only PKCS#7."""
        return self._identity(endpoint).ca_response

    def ca_certificate(self, issuer_key_id: str) -> bytes | None:
        """The DER certificate of an active or previous CA of ours with this key
        id (spki_sha256_hex): what the caIssuers URL of issued certificates serves."""
        for identity in self._all_identities():
            for certificate in (identity.ca_certificate, *identity.previous_ca_certificates):
                if spki_sha256_hex(certificate.public_key()) == issuer_key_id:
                    return certificate.public_bytes(Encoding.DER)
        return None

    def next_ca_certificate(self, endpoint: str = DEFAULT_ENDPOINT) -> bytes | None:
        """The staged generation's GetNextCACert body (signed by the current CA), if any."""
        return self._identity(endpoint).next_ca_response

    async def latest_crl(self, issuer_key_id: str | None = None) -> CrlView | None:
        """The newest CRL of the CA with this key id (spki_sha256_hex), or of the
        default CA's active generation; None when there is none (yet)."""
        if issuer_key_id is None:
            issuer_key_id = spki_sha256_hex(self._identities().ca_certificate.public_key())
        return await self._repository.latest_crl(issuer_key_id)

    # -- PKIOperation ---------------------------------------------------------

    async def pki_operation(self, der: bytes, endpoint: str = DEFAULT_ENDPOINT) -> ScepReply:
        """Answer one pkiMessage sent to ``endpoint`` with a CertRep (FAILURE included).

        Raises ScepError only when no CertRep can be addressed (HTTP 400).
        """
        identity = self._identity(endpoint)
        try:
            message = read_pki_message(der)
        except ScepError as error:  # a bad signature: we still know whom to answer
            return await self._refuse(error, identity.active_ra)
        with bind_transaction(message.transaction_id), bind_endpoint(endpoint):
            reply_as = identity.active_ra
            try:
                self._check_signing_time(message)
                if message.message_type is MessageType.CERT_REP:
                    raise BadRequest("a CertRep is not a request").with_header(message.header)
                opened = await self._open(message, identity)
                reply_as = (opened.recipient_key, opened.recipient)
                content = parse_message_data(message, opened.plaintext)
                exchange = _Exchange(message, opened.encryption, reply_as, identity, endpoint)
                if isinstance(content, CertificationRequest):
                    return await self._enrol(exchange, content)
                if message.message_type is MessageType.CERT_POLL:
                    return await self._poll(exchange)
                assert isinstance(content, IssuerAndSerial)
                if message.message_type is MessageType.GET_CERT:
                    return await self._get_cert(exchange, content)
                return await self._get_crl(exchange, content)
            except ScepError as error:
                return await self._refuse(error, reply_as)

    async def failure(
        self,
        header: MessageHeader,
        fail_info: FailInfo,
        text: str,
        *,
        reply_as: Recipient | None = None,
    ) -> ScepReply:
        """A CertRep FAILURE, signed by ``reply_as`` (default: the active RA)."""
        body = await self._cert_rep(
            reply_as or self._identities().active_ra,
            request=header,
            status=PkiStatus.FAILURE,
            fail_info=fail_info,
            fail_info_text=text,
        )
        return ScepReply(
            body=body,
            message_type=header.message_type or MessageType.CERT_REP,
            status=PkiStatus.FAILURE,
            fail_info=fail_info,
        )

    async def _refuse(self, error: ScepError, reply_as: Recipient) -> ScepReply:
        if error.header is None or error.fail_info is None:
            raise error
        log.info(
            "answered FAILURE",
            transaction_id=error.header.transaction_id,
            fail_info=error.fail_info.rfc_name,
            reason=error.failure_message,
        )
        await self._remember_refusal(error.header, error.fail_info, _for_the_operator(error))
        return await self.failure(
            error.header, error.fail_info, error.failure_message, reply_as=reply_as
        )

    async def _remember_refusal(
        self, header: MessageHeader, fail_info: FailInfo, reason: str
    ) -> None:
        """Keep the refusal where `scepline request show` finds it (a bounded
        ring in the store); a store in trouble must not turn the FAILURE the
        client is owed into an error."""
        try:
            await self._repository.record_refusal(
                transaction_id=header.transaction_id,
                message_type=None if header.message_type is None else int(header.message_type),
                fail_info=int(fail_info),
                reason=reason,
            )
        except Exception as error:  # noqa: BLE001 - the refusal is logged above anyway
            log.warning("could not record the refusal", error=str(error)[:200])

    async def _open(self, message: PkiMessage, identity: ScepIdentity) -> OpenedEnvelope:
        try:
            return await self._codec(
                identity.decrypt_blocks,
                functools.partial(
                    open_envelope_for,
                    message,
                    recipients=identity.decryptors,
                    allowed=self._allowed_encryption,
                ),
            )
        except DisallowedAlgorithm as refused:
            log.warning(
                "refused a disallowed content encryption; set "
                "SCEPLINE_SCEP_ALLOW_DES=true to accept single DES",
                algorithm=refused.algorithm,
            )
            raise

    async def _cert_rep(self, reply_as: Recipient, **arguments: Any) -> bytes:
        key, certificate = reply_as
        return await self._codec(
            blocks_in_token(key),
            functools.partial(
                build_cert_rep, signer_key=key, signer_certificate=certificate, **arguments
            ),
        )

    async def _codec(self, blocking: bool, work: Callable[[], T]) -> T:
        """Run ``work`` inline, or in a codec thread when it waits for a token."""
        if not blocking:
            return work()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(_CODEC_THREADS, thread_name_prefix="scep-codec")
        context = contextvars.copy_context()  # keeps the bound transaction for logs
        return await asyncio.get_running_loop().run_in_executor(self._executor, context.run, work)

    async def _enrol(self, exchange: _Exchange, request: CertificationRequest) -> ScepReply:
        message = exchange.message
        key_id = requester_key_id(message.signer_certificate)
        signer = message.signer_certificate
        renewal_of = self._renewal_of(exchange.identity, signer)
        if message.message_type is MessageType.RENEWAL_REQ and renewal_of is None:
            raise BadRequest(
                "RenewalReq must be signed with a certificate this CA issued"
            ).with_header(message.header)
        key = request_key(message.transaction_id, renewal_of, exchange.endpoint)
        await self._admit(exchange.endpoint, key)
        recorded = await self._repository.record_request(
            transaction_id=key,
            signer_key_id=key_id,
            message_type=int(message.message_type),
            csr_der=request.der,
            signer_cert_der=signer.public_bytes(Encoding.DER),
            subject=request.csr.subject.rfc4514_string(),
            renewal_of_serial=renewal_of,
            queued=True,  # handed to the pipeline just below
            endpoint=exchange.endpoint,
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
            await self._pipeline.submit(stored.transaction_id, request=stored)
        else:
            log.info("retransmitted request", state=stored.state)
        stored = await self._await_outcome(stored)
        return await self._answer(exchange, stored)

    async def _admit(self, endpoint: str, key: str) -> None:
        """Raise Throttled when ``endpoint``'s enrolment rate is used up and
        ``key`` names no request yet (a retransmission is always answered)."""
        bucket = self._buckets.get(endpoint)
        if bucket is None or bucket.take():
            return
        if await self._repository.get(key) is None:
            raise Throttled(endpoint, bucket.retry_after())

    async def _poll(self, exchange: _Exchange) -> ScepReply:
        message = exchange.message
        renewal_of = self._renewal_of(exchange.identity, message.signer_certificate)
        request = await self._repository.get(
            request_key(message.transaction_id, renewal_of, exchange.endpoint)
        )
        if request is None:
            raise BadCertId("no request with this transactionID").with_header(message.header)
        if request.signer_key_id != requester_key_id(message.signer_certificate):
            raise BadRequest("this transaction belongs to another requester key").with_header(
                message.header
            )
        return await self._answer(exchange, request)

    async def _get_cert(self, exchange: _Exchange, content: IssuerAndSerial) -> ScepReply:
        certificate = await self._repository.get_certificate(serial_hex(content.serial_number))
        # A voided serial (claimed, never stored) has no certificate to give.
        if (
            certificate is None
            or certificate.der is None
            or not _names_one_of(content.issuer, exchange.identity)
        ):
            raise BadCertId("no certificate with this issuer and serial").with_header(
                exchange.message.header
            )
        return await self._success(
            exchange, certificates=[x509.load_der_x509_certificate(certificate.der)]
        )

    async def _get_crl(self, exchange: _Exchange, content: IssuerAndSerial) -> ScepReply:
        header = exchange.message.header
        ca = await self._crl_issuer(exchange.identity, content)
        if ca is None:
            raise BadCertId("the certificate was not issued by this CA").with_header(header)
        crl = await self._repository.latest_crl(spki_sha256_hex(ca.public_key()))
        if crl is None:
            raise BadRequest("no CRL has been published yet").with_header(header)
        return await self._success(exchange, crls=[x509.load_der_x509_crl(crl.der)])

    # -- helpers ----------------------------------------------------------------

    async def _crl_issuer(
        self, identity: ScepIdentity, content: IssuerAndSerial
    ) -> x509.Certificate | None:
        """Which of our CAs GetCRL asks about. A rollover may keep the CA's name,
        so when several match, the certificate itself (if we issued it) decides."""
        named = [ca for ca in identity.ca_certificates if ca.subject == content.issuer]
        if len(named) > 1:
            stored = await self._repository.get_certificate(serial_hex(content.serial_number))
            if stored is not None and stored.der is not None:
                issuer = identity.issuer_of(x509.load_der_x509_certificate(stored.der))
                if issuer is not None and issuer in named:
                    return issuer
        return named[0] if named else None

    async def _await_outcome(self, request: RequestView) -> RequestView:
        wait = self._sync_waits.get(request.endpoint, self._options.sync_wait_seconds)
        if answer_now(request) or wait <= 0:
            return request
        REQUESTS_IN_FLIGHT.inc()
        try:
            await self._pipeline.wait_for_outcome(request.transaction_id, wait)
        finally:
            REQUESTS_IN_FLIGHT.dec()
        return await self._repository.get(request.transaction_id) or request

    async def _answer(self, exchange: _Exchange, request: RequestView) -> ScepReply:
        message = exchange.message
        if request.state == RequestState.ISSUED and request.cert_der is not None:
            certificate = x509.load_der_x509_certificate(request.cert_der)
            chain = (
                exchange.identity.ca_certificates if self._options.include_chain_in_cert_rep else ()
            )
            return await self._success(exchange, certificates=[certificate, *chain])
        if request.state in (RequestState.REJECTED, RequestState.FAILED):
            fail_info = (
                FailInfo(request.fail_info)
                if request.fail_info is not None
                else (FailInfo.BAD_REQUEST)
            )
            return await self.failure(
                message.header,
                fail_info,
                request.fail_reason or "refused",
                reply_as=exchange.reply_as,
            )
        body = await self._cert_rep(
            exchange.reply_as, request=message.header, status=PkiStatus.PENDING
        )
        return ScepReply(body=body, message_type=message.message_type, status=PkiStatus.PENDING)

    async def _success(
        self,
        exchange: _Exchange,
        *,
        certificates: Sequence[x509.Certificate] = (),
        crls: Sequence[x509.CertificateRevocationList] = (),
    ) -> ScepReply:
        message = exchange.message
        body = await self._cert_rep(
            exchange.reply_as,
            request=message.header,
            status=PkiStatus.SUCCESS,
            certificates=certificates,
            crls=crls,
            recipient=message.signer_certificate,
            encryption=exchange.encryption,
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

    @staticmethod
    def _renewal_of(identity: ScepIdentity, signer: x509.Certificate) -> str | None:
        """The serial of our certificate that signed the message, if it is one."""
        return serial_hex(signer.serial_number) if identity.issued_by_us(signer) else None


def _names_one_of(issuer: x509.Name, identity: ScepIdentity) -> bool:
    return any(issuer == ca.subject for ca in identity.ca_certificates)
