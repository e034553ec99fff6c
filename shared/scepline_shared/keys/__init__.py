"""Keys: the private-key + certificate pairing used by the CA, RA and codec.

Keys are always cryptography private-key ABCs (:data:`SigningKey`); where they
live (PEM file, HSM) is decided once at the edge, never here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from scepline_shared.keys.file import (
    KeyFileError,
    SigningKey,
    generate_private_key,
    load_private_key,
    save_private_key,
    write_file_atomic,
)

__all__ = [
    "KeyFileError",
    "KeyPair",
    "SigningKey",
    "generate_private_key",
    "load_private_key",
    "save_private_key",
    "spki_sha256_hex",
    "write_file_atomic",
]


def spki_sha256_hex(public_key: PublicKeyTypes) -> str:
    """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo.

    This is the requester key id used across scepline (store, logs, messages): it
    is stable across re-encodings of the CSR and independent of the subject.
    """
    spki = public_key.public_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return hashlib.sha256(spki).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A private key and the certificate for its public key.

    Construction checks that they belong together, so a CA/RA mix-up fails at
    startup rather than as an unverifiable CertRep at enrolment time.
    """

    key: SigningKey
    certificate: x509.Certificate

    def __post_init__(self) -> None:
        if not isinstance(self.key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise TypeError(
                f"key must be an RSAPrivateKey or EllipticCurvePrivateKey, "
                f"got {type(self.key).__name__}"
            )
        if not isinstance(self.certificate, x509.Certificate):
            raise TypeError(
                f"certificate must be an x509.Certificate, got {type(self.certificate).__name__}"
            )
        if self.key.public_key() != self.certificate.public_key():
            raise ValueError(
                f"private key does not match the certificate for "
                f"{self.certificate.subject.rfc4514_string()!r}"
            )

    @property
    def key_id(self) -> str:
        """:func:`spki_sha256_hex` of the certificate's public key."""
        return spki_sha256_hex(self.certificate.public_key())
