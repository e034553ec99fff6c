"""The OCSP codec: what it reads from requests other software encodes, and
responses other software reads (cryptography's OCSP parser here; openssl and
GnuTLS in tests/interop/test_ocsp.py)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import core
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import ocsp

from scepline_shared.ocsp.codec import (
    CertStatus,
    MalformedRequest,
    ResponseStatus,
    SingleAnswer,
    error_response,
    issuer_hashes,
    parse_request,
    successful_response,
)
from tests.shared.ocsp.pki import make_ca, make_leaf, make_responder, ocsp_request

CA = make_ca()
RESPONDER = make_responder(CA)
LEAF = make_leaf(CA)


def test_a_request_names_the_issuer_by_hashes_and_the_certificate_by_serial() -> None:
    request = parse_request(ocsp_request(LEAF, CA.certificate))

    (cert_id,) = request.cert_ids
    assert cert_id.hash_algorithm == "sha1"
    assert (cert_id.issuer_name_hash, cert_id.issuer_key_hash) == issuer_hashes(
        CA.certificate, "sha1"
    )
    assert cert_id.serial == LEAF.serial_number
    assert request.nonce is None


@pytest.mark.parametrize("algorithm", [hashes.SHA256(), hashes.SHA384(), hashes.SHA512()])
def test_sha2_cert_ids_are_read_too(algorithm: hashes.HashAlgorithm) -> None:
    (cert_id,) = parse_request(ocsp_request(LEAF, CA.certificate, algorithm=algorithm)).cert_ids
    assert cert_id.hash_algorithm == algorithm.name
    assert cert_id.issuer_key_hash == issuer_hashes(CA.certificate, algorithm.name)[1]


def test_the_nonce_is_kept_as_sent() -> None:
    nonce = bytes(range(32))
    request = parse_request(ocsp_request(LEAF, CA.certificate, nonce=nonce))
    assert request.nonce is not None
    assert core.OctetString.load(request.nonce).native == nonce


def _request_with(cert_ids: list[asn1_ocsp.CertId], nonce: bytes | None = None) -> bytes:
    tbs: dict[str, object] = {"request_list": [{"req_cert": c} for c in cert_ids]}
    if nonce is not None:
        tbs["request_extensions"] = [
            {"extn_id": "nonce", "critical": False, "extn_value": core.OctetString(nonce)}
        ]
    return asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump()


def _cert_id(serial: int, algorithm: str = "sha1", issuer: x509.Certificate = CA.certificate):
    name_hash, key_hash = issuer_hashes(issuer, "sha1" if algorithm == "md5" else algorithm)
    if algorithm == "md5":
        name_hash, key_hash = name_hash[:16], key_hash[:16]
    return asn1_ocsp.CertId(
        {
            "hash_algorithm": {"algorithm": algorithm},
            "issuer_name_hash": name_hash,
            "issuer_key_hash": key_hash,
            "serial_number": serial,
        }
    )


def test_several_certificates_in_one_request_are_read_in_order() -> None:
    request = parse_request(_request_with([_cert_id(5), _cert_id(7), _cert_id(6)]))
    assert [c.serial for c in request.cert_ids] == [5, 7, 6]


@pytest.mark.parametrize(
    ("what", "der"),
    [
        ("garbage", b"not an OCSP request"),
        ("empty", b""),
        ("truncated", ocsp_request(LEAF, CA.certificate)[:-7]),
        ("trailing bytes", ocsp_request(LEAF, CA.certificate) + b"\x00"),
        ("no certificate", _request_with([])),
        ("unknown hash algorithm", _request_with([_cert_id(5, "md5")])),
        ("serial zero", _request_with([_cert_id(0)])),
        ("empty nonce", _request_with([_cert_id(5)], nonce=b"")),
        ("nonce over 128 octets", _request_with([_cert_id(5)], nonce=b"n" * 129)),
        ("33 certificates", _request_with([_cert_id(n) for n in range(1, 34)])),
        ("a certificate, not a request", CA.certificate.public_bytes(Encoding.DER)),
    ],
)
def test_what_is_not_a_request_we_can_answer_is_malformed(what: str, der: bytes) -> None:
    with pytest.raises(MalformedRequest):
        parse_request(der)


def _sign(data: bytes) -> bytes:
    assert isinstance(RESPONDER.key, ec.EllipticCurvePrivateKey)
    return RESPONDER.key.sign(data, ec.ECDSA(hashes.SHA256()))


def test_a_response_is_signed_by_the_responder_and_names_it_by_key() -> None:
    request = parse_request(ocsp_request(LEAF, CA.certificate, nonce=b"n" * 16))
    now = datetime(2026, 12, 6, 10, 0, 0, 987654, tzinfo=UTC)
    der = successful_response(
        [
            SingleAnswer(
                request.cert_ids[0],
                CertStatus.REVOKED,
                this_update=now,
                next_update=now + timedelta(hours=1),
                revoked_at=now - timedelta(minutes=1),
                reason=1,
            )
        ],
        responder=RESPONDER.certificate,
        signature_algorithm="sha256_ecdsa",
        sign=_sign,
        produced_at=now,
        nonce=request.nonce,
        include_responder_certificate=True,
    )

    response = ocsp.load_der_ocsp_response(der)
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason is x509.ReasonFlags.key_compromise
    assert response.serial_number == LEAF.serial_number
    # byKey: SHA-1 of the subjectPublicKey bits (an EC point, uncompressed).
    point = RESPONDER.certificate.public_key().public_bytes(
        Encoding.X962, PublicFormat.UncompressedPoint
    )
    assert response.responder_key_hash == hashlib.sha1(point).digest()
    assert response.certificates == [RESPONDER.certificate]
    nonce = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    assert nonce == b"n" * 16
    RESPONDER.certificate.public_key().verify(  # type: ignore[union-attr]
        response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256())
    )


def test_times_carry_no_fractional_seconds() -> None:
    """Some firewalls reject GeneralizedTime with fractions (RFC 5280 forbids them)."""
    request = parse_request(ocsp_request(LEAF, CA.certificate))
    now = datetime(2026, 12, 6, 10, 0, 0, 500000, tzinfo=UTC)
    der = successful_response(
        [SingleAnswer(request.cert_ids[0], CertStatus.GOOD, now, now + timedelta(hours=1))],
        responder=RESPONDER.certificate,
        signature_algorithm="sha256_ecdsa",
        sign=_sign,
        produced_at=now,
        nonce=None,
        include_responder_certificate=False,
    )
    parsed = asn1_ocsp.OCSPResponse.load(der)
    data = parsed["response_bytes"]["response"].parsed["tbs_response_data"]
    single = data["responses"][0]
    for value in (data["produced_at"], single["this_update"], single["next_update"]):
        assert value.contents.endswith(b"00Z") and b"." not in value.contents
    assert ocsp.load_der_ocsp_response(der).certificates == []


def test_an_error_response_carries_only_its_status() -> None:
    for status in (ResponseStatus.MALFORMED_REQUEST, ResponseStatus.UNAUTHORIZED):
        response = ocsp.load_der_ocsp_response(error_response(status))
        assert response.response_status.value == int(status)
    with pytest.raises(ValueError, match="successful"):
        error_response(ResponseStatus.SUCCESSFUL)
