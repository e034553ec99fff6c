"""PKCS#10 requests as clients really encode them.

cryptography parses DER strictly; strongSwan 5.9.8 sends its CSR attributes as
an unsorted SET (not DER), which cryptography refuses. We keep the bytes the
client sent (they go to Intune and into the store unchanged), verify the
proof-of-possession signature over exactly those bytes, and give the rest of
the product a DER re-encoding to read fields from.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from .errors import BadAlg, BadMessageCheck, BadRequest

__all__ = ["CertificationRequest", "load_certification_request", "load_recorded_csr"]

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@dataclass(frozen=True)
class CertificationRequest:
    der: bytes  # exactly as the client sent it
    csr: x509.CertificateSigningRequest  # a DER view for reading fields


def load_certification_request(der: bytes) -> CertificationRequest:
    """Parse a CSR and check its signature over the original encoding.

    Raises BadRequest when it is not a CSR, BadMessageCheck when the signature
    does not verify, BadAlg for a signature algorithm we do not know.
    """
    try:
        request = asn1_csr.CertificationRequest.load(der, strict=True)
        info_bytes = request["certification_request_info"].dump()
        signature = request["signature"].native
        algorithm = request["signature_algorithm"]
        try:
            csr = x509.load_der_x509_csr(der)
        except ValueError:
            # Not DER (e.g. an unsorted attribute SET): re-encode canonically.
            csr = x509.load_der_x509_csr(request.dump(force=True))
        public_key = csr.public_key()
    except (ValueError, TypeError, KeyError) as exc:
        raise BadRequest("messageData is not a valid PKCS#10 request") from exc
    _verify(public_key, algorithm, info_bytes, signature)
    return CertificationRequest(der=der, csr=csr)


def load_recorded_csr(der: bytes) -> x509.CertificateSigningRequest:
    """A CSR read back from the store, to take fields from.

    Ingress verified its signature over these very bytes before recording it
    (:func:`load_certification_request`), so the pipeline steps do not verify
    it again (about 80 us of asn1crypto and RSA per request and step). Only a
    CSR that is not DER (strongSwan's unsorted attribute SET) takes the long
    way; bytes that are no CSR at all raise its ScepError.
    """
    try:
        return x509.load_der_x509_csr(der)
    except ValueError:
        return load_certification_request(der).csr


def _verify(public_key: object, algorithm: object, data: bytes, signature: bytes) -> None:
    try:
        hash_name = algorithm.hash_algo  # type: ignore[attr-defined]
        scheme = algorithm.signature_algo  # type: ignore[attr-defined]
    except (ValueError, KeyError) as exc:
        raise BadAlg("unsupported CSR signature algorithm") from exc
    hash_type = _HASHES.get(hash_name)
    if hash_type is None:
        raise BadAlg(f"unsupported CSR signature hash {hash_name}")
    try:
        if isinstance(public_key, rsa.RSAPublicKey) and scheme == "rsassa_pkcs1v15":
            public_key.verify(signature, data, padding.PKCS1v15(), hash_type())
        elif isinstance(public_key, rsa.RSAPublicKey) and scheme == "rsassa_pss":
            pss = padding.PSS(mgf=padding.MGF1(hash_type()), salt_length=padding.PSS.AUTO)
            public_key.verify(signature, data, pss, hash_type())
        elif isinstance(public_key, ec.EllipticCurvePublicKey) and scheme == "ecdsa":
            public_key.verify(signature, data, ec.ECDSA(hash_type()))
        else:
            raise BadAlg(f"unsupported CSR signature scheme {scheme}")
    except InvalidSignature as exc:
        raise BadMessageCheck("the PKCS#10 request's signature does not verify") from exc
