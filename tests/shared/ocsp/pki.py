"""A CA, its delegated OCSP responder and leaf certificates, made as the product
makes them (scepline_shared.ca), for the OCSP specifications."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from scepline_shared.ca.issue import new_serial
from scepline_shared.ca.lab import ca_certificate
from scepline_shared.ca.ocsp_responder import prepare_responder_certificate
from scepline_shared.ca.tbs import tbs_sha256_of
from scepline_shared.keys import KeyPair, spki_sha256_hex
from scepline_shared.store import RequestRepository
from scepline_shared.store.views import IssuedCertificateRecord, SignatureClaim
from scepline_signer.handler import issued_record
from tests.services.signer.pki import record_validated


def make_ca(common_name: str = "OCSP Test CA") -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = ca_certificate(
        key, common_name, not_before=now - timedelta(days=1), not_after=now + timedelta(days=365)
    )
    return KeyPair(key=key, certificate=certificate)


def make_responder(ca: KeyPair, *, validity: timedelta = timedelta(days=7)) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    prepared = prepare_responder_certificate(
        ca, key.public_key(), serial=new_serial(), now=datetime.now(UTC), validity=validity
    )
    return KeyPair(key=key, certificate=prepared.sign(ca))


def make_leaf(ca: KeyPair, common_name: str = "device-1") -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .sign(ca.key, hashes.SHA256())
    )


def ocsp_request(
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    *,
    algorithm: hashes.HashAlgorithm | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """A DER request as an independent encoder (cryptography's builder) makes it."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        certificate, issuer, algorithm or hashes.SHA1()
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


async def claim(
    repository: RequestRepository, certificate: x509.Certificate, ca: KeyPair
) -> tuple[str, IssuedCertificateRecord]:
    """A validated request whose signing claim names ``certificate``, as the sign
    step makes it before the CA key signs: (transaction id, what it will store)."""
    transaction_id = secrets.token_hex(8)
    await record_validated(repository, transaction_id, csr_der=b"csr", subject="CN=x")
    key_id = spki_sha256_hex(ca.certificate.public_key())
    record = issued_record(certificate, issuer_key_id=key_id)
    claimed = SignatureClaim(
        serial=record.serial,
        issuer_key_id=key_id,
        issuer=record.issuer,
        subject=record.subject,
        not_before=record.not_before,
        not_after=record.not_after,
        tbs_sha256=tbs_sha256_of(certificate),
    )
    assert await repository.claim_signature(transaction_id=transaction_id, claim=claimed)
    return transaction_id, record


async def store(repository: RequestRepository, certificate: x509.Certificate, ca: KeyPair) -> None:
    """Record ``certificate`` as the sign step does: claimed, then stored."""
    transaction_id, record = await claim(repository, certificate, ca)
    assert await repository.record_signed(transaction_id=transaction_id, certificate=record)
