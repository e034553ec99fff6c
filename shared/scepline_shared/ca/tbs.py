"""What a CA key is about to sign, known before it signs.

The issuance journal records each signature's intent (serial, subject, the
SHA-256 of the TBSCertificate or TBSCertList) before the CA key is used, so a
signer that dies mid-signature leaves an entry an auditor can account for.

cryptography builds the to-be-signed structure only inside ``sign()``. The
structure depends on the signing key through one field alone, the signature
AlgorithmIdentifier, which is the same for every key of one family and hash
(sha256WithRSAEncryption for any RSA key, ecdsa-with-SHA256 for any curve).
So signing the same builder with a throwaway key of the CA key's family yields
exactly the TBS bytes the CA key will sign, at the cost of one cheap signature
(RSA-1024 about 0.1 ms, P-256 about 0.03 ms). The sign step checks the hash
again on the certificate the CA key produced.
"""

from __future__ import annotations

import hashlib
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scepline_shared.ca._common import SIGNATURE_HASH
from scepline_shared.keys import SigningKey

__all__ = ["tbs_sha256", "tbs_sha256_of"]


def tbs_sha256(
    builder: x509.CertificateBuilder | x509.CertificateRevocationListBuilder, key: SigningKey
) -> str:
    """Hex SHA-256 of the TBS structure ``key`` signs when it signs ``builder``."""
    return tbs_sha256_of(builder.sign(_stand_in(key), SIGNATURE_HASH))


def tbs_sha256_of(signed: x509.Certificate | x509.CertificateRevocationList) -> str:
    """The same hash, of something already signed (for the check and for auditors)."""
    if isinstance(signed, x509.Certificate):
        return hashlib.sha256(signed.tbs_certificate_bytes).hexdigest()
    return hashlib.sha256(signed.tbs_certlist_bytes).hexdigest()


def _stand_in(key: SigningKey) -> SigningKey:
    if isinstance(key, rsa.RSAPrivateKey):
        return _rsa_stand_in()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _ec_stand_in()
    raise TypeError(f"CA keys are RSA or EC, not {type(key).__name__}")


@cache
def _rsa_stand_in() -> rsa.RSAPrivateKey:
    # Its signatures are thrown away unread: its size only has to be cheap.
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505


@cache
def _ec_stand_in() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())
