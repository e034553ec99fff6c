"""A signed OCSP response is emitted level by level around its ResponseData
(asn1crypto re-encodes what it built at every level: 80% of a signed answer's
CPU, bench/ocsp.py --nonce). The bytes must be what asn1crypto's nested
structures give, for every kind of answer."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import core
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from scepline_shared.ca.issue import new_serial
from scepline_shared.ca.lab import ca_certificate
from scepline_shared.ca.ocsp_responder import prepare_responder_certificate
from scepline_shared.keys import KeyPair
from scepline_shared.ocsp.codec import (
    CertStatus,
    SingleAnswer,
    parse_request,
    successful_response,
)
from tests.shared.ocsp.pki import make_leaf, ocsp_request

NOW = datetime(2026, 12, 7, 0, 0, 0, 123456, tzinfo=UTC)


def rsa_pki() -> tuple[KeyPair, KeyPair]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = KeyPair(
        key=key,
        certificate=ca_certificate(
            key, "RSA CA", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=30)
        ),
    )
    responder_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    prepared = prepare_responder_certificate(
        ca, responder_key.public_key(), serial=new_serial(), now=NOW, validity=timedelta(days=7)
    )
    return ca, KeyPair(key=responder_key, certificate=prepared.sign(ca))


def ec_pki() -> tuple[KeyPair, KeyPair]:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = KeyPair(
        key=key,
        certificate=ca_certificate(
            key, "EC CA", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=30)
        ),
    )
    responder_key = ec.generate_private_key(ec.SECP256R1())
    prepared = prepare_responder_certificate(
        ca, responder_key.public_key(), serial=new_serial(), now=NOW, validity=timedelta(days=7)
    )
    return ca, KeyPair(key=responder_key, certificate=prepared.sign(ca))


PKIS = {"rsa": rsa_pki(), "ec": ec_pki()}
ALGORITHMS = {"rsa": "sha256_rsa", "ec": "sha256_ecdsa"}


def nested(
    answers: Sequence[SingleAnswer],
    *,
    responder: x509.Certificate,
    signature_algorithm: str,
    signature: bytes,
    produced_at: datetime,
    nonce: bytes | None,
    include_responder_certificate: bool,
) -> bytes:
    """The response as asn1crypto's nested structures give it (the codec's
    previous implementation, kept as the reference)."""
    from scepline_shared.ocsp.codec import _single, _whole_seconds

    der = responder.public_bytes(Encoding.DER)
    spki = asn1_x509.Certificate.load(der)["tbs_certificate"]["subject_public_key_info"]
    key_hash = hashlib.sha1(spki["public_key"].contents[1:]).digest()
    data: dict[str, object] = {
        "version": "v1",
        "responder_id": asn1_ocsp.ResponderId(name="by_key", value=key_hash),
        "produced_at": _whole_seconds(produced_at),
        "responses": [_single(answer) for answer in answers],
    }
    if nonce is not None:
        data["response_extensions"] = [
            {"extn_id": "nonce", "critical": False, "extn_value": core.OctetString.load(nonce)}
        ]
    basic: dict[str, object] = {
        "tbs_response_data": asn1_ocsp.ResponseData(data),
        "signature_algorithm": {"algorithm": signature_algorithm},
        "signature": signature,
    }
    if include_responder_certificate:
        basic["certs"] = [asn1_x509.Certificate.load(der)]
    return asn1_ocsp.OCSPResponse(
        {
            "response_status": "successful",
            "response_bytes": {
                "response_type": "basic_ocsp_response",
                "response": asn1_ocsp.BasicOCSPResponse(basic),
            },
        }
    ).dump()


def answers_for(ca: KeyPair, kinds: Sequence[str]) -> list[SingleAnswer]:
    found = []
    for n, kind in enumerate(kinds):
        request = parse_request(ocsp_request(make_leaf(ca, f"d{n}"), ca.certificate))
        found.append(
            SingleAnswer(
                cert_id=request.cert_ids[0],
                status=CertStatus[kind.upper()],
                this_update=NOW,
                next_update=NOW + timedelta(hours=1),
                revoked_at=NOW - timedelta(days=1) if kind == "revoked" else None,
                reason=1 if kind == "revoked" else None,
            )
        )
    return found


@pytest.mark.parametrize("pki", ["rsa", "ec"])
@pytest.mark.parametrize(
    "kinds", [["good"], ["revoked"], ["unknown"], ["good", "revoked", "unknown"]]
)
@pytest.mark.parametrize("nonce", [None, b"\x04\x10" + bytes(range(16))])
@pytest.mark.parametrize("include_responder_certificate", [True, False])
def test_the_emitted_response_is_what_the_nested_structures_give(
    pki: str, kinds: list[str], nonce: bytes | None, include_responder_certificate: bool
) -> None:
    ca, responder = PKIS[pki]
    answers = answers_for(ca, kinds)
    signed: list[bytes] = []

    def sign(data: bytes) -> bytes:
        signed.append(data)
        return hashlib.sha256(data).digest() * 2  # deterministic, signature-sized

    emitted = successful_response(
        answers,
        responder=responder.certificate,
        signature_algorithm=ALGORITHMS[pki],
        sign=sign,
        produced_at=NOW,
        nonce=nonce,
        include_responder_certificate=include_responder_certificate,
    )

    assert emitted == nested(
        answers,
        responder=responder.certificate,
        signature_algorithm=ALGORITHMS[pki],
        signature=sign(signed[0]),
        produced_at=NOW,
        nonce=nonce,
        include_responder_certificate=include_responder_certificate,
    )


@pytest.mark.parametrize("pki", ["rsa", "ec"])
def test_a_really_signed_response_verifies(pki: str) -> None:
    ca, responder = PKIS[pki]
    answers = answers_for(ca, ["good"])

    def sign(data: bytes) -> bytes:
        if isinstance(responder.key, rsa.RSAPrivateKey):
            return responder.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        assert isinstance(responder.key, ec.EllipticCurvePrivateKey)
        return responder.key.sign(data, ec.ECDSA(hashes.SHA256()))

    body = successful_response(
        answers,
        responder=responder.certificate,
        signature_algorithm=ALGORITHMS[pki],
        sign=sign,
        produced_at=NOW,
        nonce=None,
        include_responder_certificate=True,
    )

    response = ocsp.load_der_ocsp_response(body)
    assert response.certificates == [responder.certificate]
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    public_key = responder.certificate.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(
            response.signature, response.tbs_response_bytes, padding.PKCS1v15(), hashes.SHA256()
        )
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        public_key.verify(
            response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256())
        )
