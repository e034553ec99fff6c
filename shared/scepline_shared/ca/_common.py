"""Small helpers shared by the CA modules (not part of the public API)."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes

__all__ = ["SIGNATURE_HASH", "authority_key_identifier", "require_aware_utc"]

# SHA-256 for every CA signature: RSA -> sha256WithRSAEncryption, EC -> ecdsa-with-SHA256.
# Every SCEP client we target (Windows, Apple, certmonger, strongSwan) accepts it.
SIGNATURE_HASH = hashes.SHA256()


def require_aware_utc(value: datetime, name: str) -> datetime:
    """Return ``value`` in UTC; refuse naive datetimes (local-vs-UTC bugs are silent)."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")
    return value.astimezone(UTC)


def authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """AKI keyIdentifier copied from the issuer's SKI (hash of its key as fallback).

    Copying (rather than recomputing) keeps chains building when the issuer used a
    non-SHA-1 SKI method, e.g. an imported enterprise CA.
    """
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    """A KeyUsage naming only the bits a SCEP PKI sets; the rest stay off."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )
