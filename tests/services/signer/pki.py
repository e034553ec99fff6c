"""CA and store helpers for the signer and CRL-publisher specifications.

Token CAs live in the session's SoftHSM token (tests/fixtures/softhsm.py): one
token per pytest process, so each CA gets its own key label and id.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scepline_shared.ca.lab import ca_certificate
from scepline_shared.ca.tbs import tbs_sha256_of
from scepline_shared.keys import KeyPair, SigningKey
from scepline_shared.keys.pkcs11 import Pkcs11Token, generate_ca_keys
from scepline_shared.store import RequestRepository, RequestState
from scepline_shared.store.models import Approval
from scepline_shared.store.views import SignatureClaim
from scepline_signer.handler import issued_record

__all__ = ["file_ca", "record_validated", "store_issued", "token_ca"]


def _ca(key: SigningKey, common_name: str, *, not_after: datetime | None = None) -> KeyPair:
    """``key`` with a self-signed CA certificate as the product makes one (signed by
    the key, so in the token for HSM keys), valid from yesterday for a year."""
    now = datetime.now(UTC)
    certificate = ca_certificate(
        key,
        common_name,
        not_before=now - timedelta(days=1),
        not_after=not_after or now + timedelta(days=365),
    )
    return KeyPair(key=key, certificate=certificate)


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
    return _ca(key, common_name, not_after=not_after)


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
    return _ca(key, common_name)


async def record_validated(
    repository: RequestRepository,
    transaction_id: str,
    *,
    csr_der: bytes,
    subject: str,
    approval: Approval = Approval.CHALLENGE,
) -> None:
    """Record a request and move it to VALIDATED, as ingress and the validator do
    (``approval``: what vouched for it, a static challenge unless said)."""
    await repository.record_request(
        transaction_id=transaction_id,
        signer_key_id=secrets.token_hex(32),
        message_type=19,
        csr_der=csr_der,
        signer_cert_der=b"self-signed",
        subject=subject,
    )
    moved = await repository.transition(
        transaction_id=transaction_id,
        from_state=RequestState.RECEIVED,
        to_state=RequestState.VALIDATED,
        detail="challenge ok",
        approval=approval,
    )
    assert moved is not None


async def store_issued(
    repository: RequestRepository, certificate: x509.Certificate, transaction_id: str
) -> None:
    """Put ``certificate`` in the store the way the signer does (request -> SIGNED)."""
    subject = certificate.subject.rfc4514_string()
    await record_validated(repository, transaction_id, csr_der=b"csr", subject=subject)
    # No issuer key id on the row: the CRL publisher tells CAs apart by the AKI,
    # as for certificates recorded before the journal.
    record = issued_record(certificate)
    claim = SignatureClaim(
        serial=record.serial,
        issuer_key_id=hashlib.sha256(record.issuer.encode()).hexdigest(),
        issuer=record.issuer,
        subject=record.subject,
        not_before=record.not_before,
        not_after=record.not_after,
        tbs_sha256=tbs_sha256_of(certificate),
    )
    assert await repository.claim_signature(transaction_id=transaction_id, claim=claim)
    moved = await repository.record_signed(transaction_id=transaction_id, certificate=record)
    assert moved is not None
