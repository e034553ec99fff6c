"""CA and store helpers for the signer and CRL-publisher specifications.

Token CAs live in the session's SoftHSM token (tests/fixtures/softhsm.py): one
token per pytest process, so each CA gets its own key label and id.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from scepline_shared.ca import key_usage, new_serial, serial_hex
from scepline_shared.keys import KeyPair, SigningKey
from scepline_shared.keys.pkcs11 import Pkcs11Token, generate_ca_keys
from scepline_shared.store import IssuedCertificateRecord, RequestRepository, RequestState

__all__ = ["ca_certificate", "file_ca", "store_issued", "token_ca"]

_CA_USAGE = key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True)


def ca_certificate(
    key: SigningKey, common_name: str, *, not_after: datetime | None = None
) -> x509.Certificate:
    """A self-signed CA certificate for ``key`` (signed by it, so in the token for HSM keys)."""
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def file_ca(
    common_name: str = "Scepline Test CA",
    *,
    key_type: Literal["rsa", "ec"] = "ec",
    not_after: datetime | None = None,
) -> KeyPair:
    """A CA with an in-memory key (P-256 by default: fast to make)."""
    key: SigningKey = (
        ec.generate_private_key(ec.SECP256R1())
        if key_type == "ec"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    return KeyPair(key=key, certificate=ca_certificate(key, common_name, not_after=not_after))


def token_ca(
    token: Pkcs11Token,
    purpose: str,
    *,
    key_type: Literal["rsa", "ec"] = "rsa",
    common_name: str = "Scepline Token CA",
) -> KeyPair:
    """A CA whose key is generated in the token (non-extractable) under a unique label."""
    suffix = secrets.token_hex(4)
    key = generate_ca_keys(
        token,
        key_type=key_type,
        size_or_curve=2048 if key_type == "rsa" else 256,
        label=f"signer-crl-{purpose}-{suffix}",
        id=secrets.token_hex(8),
    )
    return KeyPair(key=key, certificate=ca_certificate(key, common_name))


async def store_issued(
    repository: RequestRepository, certificate: x509.Certificate, transaction_id: str
) -> None:
    """Put ``certificate`` in the store the way the signer does (request -> SIGNED)."""
    await repository.record_request(
        transaction_id=transaction_id,
        signer_key_id=secrets.token_hex(32),
        message_type=19,
        csr_der=b"csr",
        signer_cert_der=b"self-signed",
        subject=certificate.subject.rfc4514_string(),
    )
    await repository.transition(
        transaction_id=transaction_id,
        from_state=RequestState.RECEIVED,
        to_state=RequestState.VALIDATED,
        detail="test",
    )
    moved = await repository.issue_certificate(
        transaction_id=transaction_id,
        certificate=IssuedCertificateRecord(
            serial=serial_hex(certificate.serial_number),
            issuer=certificate.issuer.rfc4514_string(),
            subject=certificate.subject.rfc4514_string(),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            der=certificate.public_bytes(Encoding.DER),
        ),
    )
    assert moved is not None
