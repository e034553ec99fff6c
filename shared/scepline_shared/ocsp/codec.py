"""OCSP (RFC 6960, RFC 5019 profile) on the wire: read a request, write a response.

A pure codec like :mod:`scepline_shared.scep`: no store, no settings, no
logging. asn1crypto parses and encodes (cryptography's OCSP API takes one
certificate per request and response; RFC 6960 allows several); the signature
comes from a callable, so the key may be in a file or an HSM.

Times are written as GeneralizedTime without fractional seconds: some
firewalls reject responses that carry them.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

from asn1crypto import algos, core, ocsp, parser
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = [
    "HASH_ALGORITHMS",
    "MAX_NONCE_OCTETS",
    "CertId",
    "CertStatus",
    "MalformedRequest",
    "OcspRequest",
    "ResponseStatus",
    "SingleAnswer",
    "error_response",
    "issuer_hashes",
    "parse_request",
    "successful_response",
]

#: CertID hash algorithms answered (RFC 5019 2.1.1: SHA-1 MUST be accepted).
HASH_ALGORITHMS = ("sha1", "sha256", "sha384", "sha512")
#: RFC 9654 (which replaced RFC 8954): a nonce is 1 to 128 octets; others are malformed.
MAX_NONCE_OCTETS = 128
_NONCE = "nonce"


class ResponseStatus(IntEnum):
    """OCSPResponseStatus (RFC 6960 4.2.1)."""

    SUCCESSFUL = 0
    MALFORMED_REQUEST = 1
    INTERNAL_ERROR = 2
    TRY_LATER = 3
    SIG_REQUIRED = 5
    UNAUTHORIZED = 6


class CertStatus(IntEnum):
    GOOD = 0
    REVOKED = 1
    UNKNOWN = 2


class MalformedRequest(ValueError):
    """The bytes are not an OCSP request we can answer (answered malformedRequest)."""


@dataclass(frozen=True, slots=True)
class CertId:
    """One CertID as the client sent it (echoed as is in the answer)."""

    hash_algorithm: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int
    der: bytes  # the CertID's own encoding: answered byte for byte


@dataclass(frozen=True, slots=True)
class OcspRequest:
    cert_ids: tuple[CertId, ...]
    nonce: bytes | None  # the nonce extension's extnValue, echoed byte for byte


@dataclass(frozen=True, slots=True)
class SingleAnswer:
    cert_id: CertId
    status: CertStatus
    this_update: datetime
    next_update: datetime
    revoked_at: datetime | None = None
    reason: int | None = None  # RFC 5280 CRLReason code; None: not given


def parse_request(der: bytes, *, max_certificates: int = 32) -> OcspRequest:
    """The CertIDs and nonce of a DER OCSPRequest; :class:`MalformedRequest` otherwise.

    The optional request signature is not checked (RFC 5019: responders need not).
    """
    try:
        request = ocsp.OCSPRequest.load(der, strict=True)
        tbs = request["tbs_request"]
        items = tbs["request_list"]
        if not 0 < len(items) <= max_certificates:
            raise MalformedRequest(f"a request names 1 to {max_certificates} certificates")
        cert_ids = tuple(_cert_id(item["req_cert"]) for item in items)
        nonce = _nonce(tbs["request_extensions"])
    except MalformedRequest:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise MalformedRequest(f"not a DER OCSPRequest: {exc}") from exc
    return OcspRequest(cert_ids=cert_ids, nonce=nonce)


def _cert_id(value: ocsp.CertId) -> CertId:
    algorithm = value["hash_algorithm"]["algorithm"].native
    if algorithm not in HASH_ALGORITHMS:
        raise MalformedRequest(f"CertID hash algorithm {algorithm} is not supported")
    name_hash = value["issuer_name_hash"].native
    key_hash = value["issuer_key_hash"].native
    size = hashlib.new(algorithm).digest_size
    if len(name_hash) != size or len(key_hash) != size:
        raise MalformedRequest(f"CertID hashes are not {algorithm} digests")
    serial = value["serial_number"].native
    if serial <= 0 or serial.bit_length() > 160:
        raise MalformedRequest("CertID serial is not a positive number of at most 20 octets")
    return CertId(algorithm, name_hash, key_hash, serial, value.dump())


def _nonce(extensions: ocsp.TBSRequestExtensions) -> bytes | None:
    found = None
    for extension in extensions:
        if extension["extn_id"].native != _NONCE:
            continue  # others are ignored, critical or not (RFC 5019 2.1.2)
        raw = extension["extn_value"].contents
        # RFC 9654: extnValue wraps an OCTET STRING of 1..128 octets.
        inner = core.OctetString.load(raw, strict=True).native
        if not 0 < len(inner) <= MAX_NONCE_OCTETS:
            raise MalformedRequest(f"nonce of {len(inner)} octets (1 to {MAX_NONCE_OCTETS})")
        found = raw
    return found


def issuer_hashes(issuer: x509.Certificate, algorithm: str) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of CertIDs naming ``issuer`` (RFC 6960 4.1.1)."""
    name = issuer.subject.public_bytes()
    spki = asn1_x509.Certificate.load(issuer.public_bytes(serialization.Encoding.DER))[
        "tbs_certificate"
    ]["subject_public_key_info"]
    key_bits = spki["public_key"].contents[1:]  # the BIT STRING's value, no unused-bits octet
    return hashlib.new(algorithm, name).digest(), hashlib.new(algorithm, key_bits).digest()


Signer = Callable[[bytes], bytes]


def successful_response(
    answers: Sequence[SingleAnswer],
    *,
    responder: x509.Certificate,
    signature_algorithm: str,
    sign: Signer,
    produced_at: datetime,
    nonce: bytes | None,
    include_responder_certificate: bool,
) -> bytes:
    """A DER OCSPResponse (successful, id-pkix-ocsp-basic) signed by ``sign``.

    ``signature_algorithm`` is asn1crypto's name (``sha256_rsa``, ``sha256_ecdsa``);
    ``sign`` returns the signature over the DER ResponseData. The responder is
    named by key hash (RFC 5019 2.2.2); a delegated responder's certificate is
    included so clients can verify it.
    """
    certificate_der, key_hash = _responder_der_and_key_hash(responder)
    data: dict[str, object] = {
        "version": "v1",
        "responder_id": ocsp.ResponderId(name="by_key", value=key_hash),
        "produced_at": _whole_seconds(produced_at),
        "responses": [_single(answer) for answer in answers],
    }
    if nonce is not None:
        data["response_extensions"] = [
            {"extn_id": _NONCE, "critical": False, "extn_value": core.OctetString.load(nonce)}
        ]
    tbs = ocsp.ResponseData(data).dump()
    signature = sign(tbs)
    # The levels above ResponseData are emitted around its DER, each once
    # (asn1crypto 1.5.1 re-encodes nested values it built, and walks the whole
    # responder certificate again, at every level: 80% of a signed answer's CPU).
    # Byte for byte what the nested dicts give (tests/shared/ocsp/test_codec_build.py).
    basic = tbs + _algorithm_der(signature_algorithm) + _emit(_BIT_STRING, b"\x00" + signature)
    if include_responder_certificate:
        basic += _emit(0, _emit(_SEQUENCE, certificate_der), context=True)
    response_bytes = _BASIC_RESPONSE_TYPE_DER + _emit(_OCTET_STRING, _emit(_SEQUENCE, basic))
    return _emit(
        _SEQUENCE, _SUCCESSFUL_DER + _emit(0, _emit(_SEQUENCE, response_bytes), context=True)
    )


_BIT_STRING, _OCTET_STRING, _SEQUENCE = 3, 4, 16
_SUCCESSFUL_DER = ocsp.OCSPResponseStatus("successful").dump()
_BASIC_RESPONSE_TYPE_DER = ocsp.ResponseType("basic_ocsp_response").dump()


def _emit(tag: int, contents: bytes, *, context: bool = False) -> bytes:
    """One DER level: a constructed universal SEQUENCE, a primitive BIT/OCTET
    STRING, or (``context``) a constructed explicit context tag."""
    constructed = 1 if context or tag == _SEQUENCE else 0
    return parser.emit(2 if context else 0, constructed, tag, contents)


@functools.lru_cache(maxsize=8)
def _algorithm_der(signature_algorithm: str) -> bytes:
    return algos.SignedDigestAlgorithm({"algorithm": signature_algorithm}).dump()


@functools.lru_cache(maxsize=16)
def _responder_der_and_key_hash(responder: x509.Certificate) -> tuple[bytes, bytes]:
    """The responder certificate's DER and the SHA-1 of its public key (ResponderID byKey)."""
    der = responder.public_bytes(serialization.Encoding.DER)
    spki = asn1_x509.Certificate.load(der)["tbs_certificate"]["subject_public_key_info"]
    key_bits = spki["public_key"].contents[1:]  # the BIT STRING's value, no unused-bits octet
    return der, hashlib.sha1(key_bits).digest()  # noqa: S324 - ResponderID byKey is SHA-1


def error_response(status: ResponseStatus) -> bytes:
    """An unsigned OCSPResponse carrying only an error status (RFC 6960 2.3)."""
    if status is ResponseStatus.SUCCESSFUL:
        raise ValueError("a successful response carries answers: use successful_response")
    return ocsp.OCSPResponse({"response_status": int(status)}).dump()


def _single(answer: SingleAnswer) -> ocsp.SingleResponse:
    status: ocsp.CertStatus
    if answer.status is CertStatus.GOOD:
        status = ocsp.CertStatus(name="good", value=core.Null())
    elif answer.status is CertStatus.UNKNOWN:
        status = ocsp.CertStatus(name="unknown", value=core.Null())
    else:
        if answer.revoked_at is None:
            raise ValueError("a revoked answer needs its revocation time")
        info: dict[str, object] = {"revocation_time": _whole_seconds(answer.revoked_at)}
        if answer.reason is not None:
            info["revocation_reason"] = answer.reason
        status = ocsp.CertStatus(name="revoked", value=ocsp.RevokedInfo(info))
    return ocsp.SingleResponse(
        {
            "cert_id": ocsp.CertId.load(answer.cert_id.der),
            "cert_status": status,
            "this_update": _whole_seconds(answer.this_update),
            "next_update": _whole_seconds(answer.next_update),
        }
    )


def _whole_seconds(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("OCSP times must be timezone-aware")
    return moment.astimezone(UTC).replace(microsecond=0)
