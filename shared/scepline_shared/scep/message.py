"""SCEP pkiMessages (RFC 8894 §3): read requests, build CertReps, and the client side.

The server path is ``read_pki_message`` → ``open_envelope`` →
``parse_message_data``, then ``build_cert_rep``. The client path
(``build_request``, ``read_cert_rep``) serves the test suite, the benchmarks and
operators who want a Python SCEP client.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from . import asn1
from .csr import CertificationRequest, load_certification_request
from .envelope import (
    Decrypted,
    Recipient,
    encrypt_enveloped_data,
    open_enveloped_data,
    recipients_from,
)
from .errors import BadMessageCheck, BadRequest, MalformedMessage, ScepError
from .signed import (
    PrivateSigningKey,
    SignedMessage,
    build_degenerate,
    parse_degenerate,
    read_signed_data,
    sign_data,
    verify_signed_message,
)
from .types import ContentEncryption, Digest, FailInfo, MessageType, PkiStatus

__all__ = [
    "CertRep",
    "IssuerAndSerial",
    "IssuerAndSubjectNames",
    "MessageHeader",
    "OpenedEnvelope",
    "PkiMessage",
    "Recipient",
    "build_cert_rep",
    "build_request",
    "open_envelope",
    "open_envelope_for",
    "parse_message_data",
    "read_cert_rep",
    "read_pki_message",
]

NONCE_SIZE = 16
# Real clients use 28 to ~80 characters; the store appends a renewal suffix.
MAX_TRANSACTION_ID_LENGTH = 200


@dataclass(frozen=True)
class MessageHeader:
    """What a CertRep must echo: enough to answer even a request that failed."""

    message_type: MessageType | None
    transaction_id: str
    sender_nonce: bytes
    digest: Digest


@dataclass(frozen=True)
class PkiMessage:
    header: MessageHeader
    message_type: MessageType
    signer_certificate: x509.Certificate
    certificates: tuple[x509.Certificate, ...]
    envelope: bytes | None  # the pkcsPKIEnvelope (ContentInfo DER), None if absent or empty
    pki_status: PkiStatus | None = None
    fail_info: FailInfo | None = None
    fail_info_text: str | None = None
    recipient_nonce: bytes | None = None
    signing_time: dt.datetime | None = None

    @property
    def transaction_id(self) -> str:
        return self.header.transaction_id


@dataclass(frozen=True)
class IssuerAndSubjectNames:
    """CertPoll messageData."""

    issuer: x509.Name
    subject: x509.Name


@dataclass(frozen=True)
class IssuerAndSerial:
    """GetCert / GetCRL messageData."""

    issuer: x509.Name
    serial_number: int


MessageData = CertificationRequest | IssuerAndSubjectNames | IssuerAndSerial

#: What :func:`open_envelope_for` returns: plaintext, the client's content
#: encryption, and the (key, certificate) the envelope was addressed to.
OpenedEnvelope = Decrypted


def read_pki_message(der: bytes) -> PkiMessage:
    """Parse and verify a pkiMessage; the envelope is left closed.

    Raises MalformedMessage when no CertRep can be addressed; any other
    ScepError carries the header so a FAILURE can be answered.
    """
    signed = read_signed_data(der)
    header = _read_header(signed)
    try:
        if signed.content is not None:
            _check_content_type(signed)
        verify_signed_message(signed)
        message_type = _message_type(signed)
        status = _optional_int(signed, asn1.PKI_STATUS)
        fail_info = _optional_int(signed, asn1.FAIL_INFO)
        fail_text = signed.attributes.get(asn1.FAIL_INFO_TEXT)
        recipient_nonce = signed.attributes.get(asn1.RECIPIENT_NONCE)
        signing_time = signed.attributes.get("signing_time")
        return PkiMessage(
            header=header,
            message_type=message_type,
            signer_certificate=signed.signer_certificate,
            certificates=signed.certificates,
            # An empty eContent (a FAILURE or PENDING CertRep) is no envelope.
            envelope=signed.content or None,
            pki_status=PkiStatus(status) if status is not None else None,
            fail_info=FailInfo(fail_info) if fail_info is not None else None,
            fail_info_text=fail_text.native if fail_text is not None else None,
            recipient_nonce=recipient_nonce.native if recipient_nonce is not None else None,
            signing_time=signing_time.native if signing_time is not None else None,
        )
    except ScepError as error:
        raise error.with_header(header) from error.__cause__
    except (ValueError, TypeError) as exc:
        raise BadRequest("malformed SCEP attribute").with_header(header) from exc


def open_envelope(
    message: PkiMessage,
    *,
    recipients: Sequence[Recipient] | None = None,
    recipient_key: rsa.RSAPrivateKey | None = None,
    recipient: x509.Certificate | None = None,
    allowed: Collection[ContentEncryption],
) -> tuple[bytes, ContentEncryption]:
    """Decrypt the pkcsPKIEnvelope; errors carry the message header.

    Pass the candidate ``recipients`` (key, certificate) pairs, or one pair as
    ``recipient_key`` and ``recipient``. The envelope's RecipientInfo picks the
    candidate; none named is BadMessageCheck. :func:`open_envelope_for` also
    returns which candidate it was.
    """
    opened = open_envelope_for(
        message, recipients=recipients_from(recipients, recipient_key, recipient), allowed=allowed
    )
    return opened.plaintext, opened.encryption


def open_envelope_for(
    message: PkiMessage,
    *,
    recipients: Sequence[Recipient],
    allowed: Collection[ContentEncryption],
) -> OpenedEnvelope:
    """Like :func:`open_envelope`, and tell which recipient the client encrypted to
    (a server answers with that RA, which the client already holds)."""
    if message.envelope is None:
        raise BadRequest("the pkiMessage has no pkcsPKIEnvelope").with_header(message.header)
    try:
        return open_enveloped_data(message.envelope, recipients=recipients, allowed=allowed)
    except ScepError as error:
        raise error.with_header(message.header) from error.__cause__


def parse_message_data(message: PkiMessage, data: bytes) -> MessageData:
    """Decode the decrypted messageData for the message's type (RFC 8894 §3.3)."""
    try:
        if message.message_type.is_enrolment:
            return load_certification_request(data)
        if message.message_type is MessageType.CERT_POLL:
            names = asn1.IssuerAndSubject.load(data, strict=True)
            return IssuerAndSubjectNames(
                issuer=_name(names["issuer"]), subject=_name(names["subject"])
            )
        if message.message_type in (MessageType.GET_CERT, MessageType.GET_CRL):
            serial = cms.IssuerAndSerialNumber.load(data, strict=True)
            return IssuerAndSerial(
                issuer=_name(serial["issuer"]), serial_number=serial["serial_number"].native
            )
    except ScepError as error:
        raise error.with_header(message.header) from error.__cause__
    except (ValueError, TypeError, KeyError) as exc:
        raise BadRequest(f"messageData is not a valid {message.message_type.name}").with_header(
            message.header
        ) from exc
    raise BadRequest(f"{message.message_type.name} carries no messageData").with_header(
        message.header
    )


def build_cert_rep(
    *,
    request: MessageHeader,
    status: PkiStatus,
    signer_key: PrivateSigningKey,
    signer_certificate: x509.Certificate,
    fail_info: FailInfo | None = None,
    fail_info_text: str | None = None,
    certificates: Iterable[x509.Certificate] = (),
    crls: Iterable[x509.CertificateRevocationList] = (),
    recipient: x509.Certificate | None = None,
    encryption: ContentEncryption | None = None,
    extra_signer_certificates: Iterable[x509.Certificate] = (),
) -> bytes:
    """A CertRep answering ``request`` (RFC 8894 §3.3.2).

    SUCCESS carries certificates (or CRLs) encrypted to ``recipient``;
    FAILURE and PENDING carry no envelope, but an empty eContent: clients on
    OpenSSL's PKCS#7 API (certmonger) cannot read a SignedData without content,
    and other servers (micromdm, EJBCA) send it empty too.
    """
    content = b""
    if status is PkiStatus.SUCCESS:
        if recipient is None or encryption is None:
            raise TypeError("a SUCCESS CertRep needs a recipient and an encryption algorithm")
        payload = build_degenerate(certificates, crls)
        content = encrypt_enveloped_data(payload, recipient=recipient, encryption=encryption)
    elif status is PkiStatus.FAILURE and fail_info is None:
        raise TypeError("a FAILURE CertRep needs a failInfo")
    attributes = [
        _constant_attribute(asn1.MESSAGE_TYPE, str(int(MessageType.CERT_REP))),
        _constant_attribute(asn1.PKI_STATUS, str(int(status))),
        _attribute(asn1.TRANSACTION_ID, core.PrintableString(request.transaction_id)),
        _attribute(asn1.SENDER_NONCE, core.OctetString(os.urandom(NONCE_SIZE))),
        _attribute(asn1.RECIPIENT_NONCE, core.OctetString(request.sender_nonce)),
    ]
    if status is PkiStatus.FAILURE and fail_info is not None:
        attributes.append(_constant_attribute(asn1.FAIL_INFO, str(int(fail_info))))
        if fail_info_text:
            attributes.append(_attribute(asn1.FAIL_INFO_TEXT, core.UTF8String(fail_info_text)))
    return sign_data(
        content=content,
        attributes=attributes,
        signer_key=signer_key,
        signer_certificate=signer_certificate,
        digest=request.digest,
        certificates=extra_signer_certificates,
    )


def build_request(
    *,
    message_type: MessageType | int,
    transaction_id: str,
    message_data: bytes,
    signer_key: PrivateSigningKey,
    signer_certificate: x509.Certificate,
    recipient: x509.Certificate,
    encryption: ContentEncryption = ContentEncryption.AES128_CBC,
    digest: Digest = Digest.SHA256,
    sender_nonce: bytes | None = None,
    signing_time: dt.datetime | None = None,
) -> bytes:
    """Client side: a PKCSReq, RenewalReq, CertPoll, GetCert or GetCRL pkiMessage.

    ``message_type`` may be any integer, so tests can send what no RFC defines.
    """
    envelope = encrypt_enveloped_data(message_data, recipient=recipient, encryption=encryption)
    attributes = [
        _attribute(asn1.MESSAGE_TYPE, core.PrintableString(str(int(message_type)))),
        _attribute(asn1.TRANSACTION_ID, core.PrintableString(transaction_id)),
        _attribute(asn1.SENDER_NONCE, core.OctetString(sender_nonce or os.urandom(NONCE_SIZE))),
    ]
    return sign_data(
        content=envelope,
        attributes=attributes,
        signer_key=signer_key,
        signer_certificate=signer_certificate,
        digest=digest,
        signing_time=signing_time,
    )


def issuer_and_subject(issuer: x509.Name, subject: x509.Name) -> bytes:
    """CertPoll messageData."""
    return asn1.IssuerAndSubject(
        {
            "issuer": asn1_x509.Name.load(issuer.public_bytes()),
            "subject": asn1_x509.Name.load(subject.public_bytes()),
        }
    ).dump()


def issuer_and_serial(issuer: x509.Name, serial_number: int) -> bytes:
    """GetCert / GetCRL messageData."""
    return cms.IssuerAndSerialNumber(
        {"issuer": asn1_x509.Name.load(issuer.public_bytes()), "serial_number": serial_number}
    ).dump()


@dataclass(frozen=True)
class CertRep:
    """A CertRep as a client sees it after verifying and decrypting it."""

    status: PkiStatus
    transaction_id: str
    fail_info: FailInfo | None
    fail_info_text: str | None
    certificates: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...]


def read_cert_rep(
    der: bytes,
    *,
    expected_signer: x509.Certificate,
    sender_nonce: bytes,
    client_key: rsa.RSAPrivateKey,
    client_certificate: x509.Certificate,
) -> CertRep:
    """Client side: verify a CertRep the way a strict client does."""
    message = read_pki_message(der)
    if message.message_type is not MessageType.CERT_REP:
        raise BadRequest("not a CertRep")
    if message.signer_certificate != expected_signer:
        raise BadMessageCheck("CertRep is not signed by the expected RA/CA certificate")
    if message.recipient_nonce != sender_nonce:
        raise BadMessageCheck("recipientNonce does not echo our senderNonce")
    if message.pki_status is None:
        raise BadRequest("CertRep has no pkiStatus")
    certificates: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    if message.pki_status is PkiStatus.SUCCESS:
        payload, _ = open_envelope(
            message,
            recipient_key=client_key,
            recipient=client_certificate,
            allowed=tuple(ContentEncryption),
        )
        found_certs, found_crls = parse_degenerate(payload)
        certificates, crls = tuple(found_certs), tuple(found_crls)
    return CertRep(
        status=message.pki_status,
        transaction_id=message.transaction_id,
        fail_info=message.fail_info,
        fail_info_text=message.fail_info_text,
        certificates=certificates,
        crls=crls,
    )


def _read_header(signed: SignedMessage) -> MessageHeader:
    transaction = signed.attributes.get(asn1.TRANSACTION_ID)
    nonce = signed.attributes.get(asn1.SENDER_NONCE)
    if transaction is None or nonce is None:
        raise MalformedMessage("the pkiMessage lacks transactionID or senderNonce")
    try:
        transaction_id = transaction.native
        sender_nonce = nonce.native
    except (ValueError, TypeError) as exc:
        raise MalformedMessage("transactionID or senderNonce is malformed") from exc
    if not transaction_id or len(transaction_id) > MAX_TRANSACTION_ID_LENGTH:
        raise MalformedMessage("transactionID is empty or too long")
    if not sender_nonce or len(sender_nonce) > 64:
        raise MalformedMessage("senderNonce is empty or too long")
    try:
        message_type: MessageType | None = _message_type(signed)
    except ScepError:
        message_type = None
    # A digest we cannot compute still gets an answer, signed with SHA-256.
    return MessageHeader(
        message_type=message_type,
        transaction_id=transaction_id,
        sender_nonce=sender_nonce,
        digest=signed.digest or Digest.SHA256,
    )


def _message_type(signed: SignedMessage) -> MessageType:
    value = _optional_int(signed, asn1.MESSAGE_TYPE)
    if value is None:
        raise BadRequest("the pkiMessage has no messageType")
    try:
        return MessageType(value)
    except ValueError:
        raise BadRequest(f"unsupported messageType {value}") from None


def _optional_int(signed: SignedMessage, name: str) -> int | None:
    value = signed.attributes.get(name)
    if value is None:
        return None
    text = value.native
    if not isinstance(text, str) or not text.strip().isdigit():
        raise BadRequest(f"{name} is not a decimal number")
    return int(text)


def _check_content_type(signed: SignedMessage) -> None:
    content_type = signed.attributes.get("content_type")
    if content_type is not None and content_type.native != "data":
        raise BadRequest("the pkiMessage content type is not id-data")


def _attribute(name: str, value: core.Asn1Value) -> cms.CMSAttribute:
    return asn1.attribute(name, value)


def _constant_attribute(name: str, value: str) -> cms.CMSAttribute:
    # messageType, pkiStatus and failInfo take a few values: their DER is cached.
    return asn1.constant_attribute(name, core.PrintableString(value))


def _name(name: asn1_x509.Name) -> x509.Name:
    """Convert an asn1crypto Name (cryptography has no public DER Name parser)."""
    rdns = []
    for rdn in name.chosen:
        attributes = [
            x509.NameAttribute(
                x509.ObjectIdentifier(type_and_value["type"].dotted),
                str(type_and_value["value"].native),
            )
            for type_and_value in rdn
        ]
        rdns.append(x509.RelativeDistinguishedName(attributes))
    return x509.Name(rdns)
