"""Issue an end-entity certificate from a PKCS#10 CSR under a profile."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID

from scepline_shared.ca._common import (
    SIGNATURE_HASH,
    authority_key_identifier,
    require_aware_utc,
)
from scepline_shared.ca.errors import CaMaterialError, PolicyViolation
from scepline_shared.ca.profile import CertificateProfile, requested_sans
from scepline_shared.ca.tbs import tbs_sha256
from scepline_shared.keys import KeyPair
from scepline_shared.serials import parse_serial, serial_hex

__all__ = [
    "MAX_SERIAL",
    "PreparedCertificate",
    "issue_certificate",
    "new_serial",
    "parse_serial",
    "prepare_certificate",
    "serial_hex",
]

#: RFC 5280 4.1.2.2: serials are positive and at most 20 octets of DER content.
MAX_SERIAL = (1 << 159) - 1

_SERIAL_BITS = 127


def new_serial() -> int:
    """A fresh random serial with 126 bits from :mod:`secrets`.

    The top bit of the 127-bit value is forced on, so every serial is exactly
    127 bits: positive without a DER sign-padding octet (16 octets, well under
    20), a constant 32-digit hex form, and far above the CA/B 64-bit entropy floor.
    """
    return secrets.randbits(_SERIAL_BITS - 1) | (1 << (_SERIAL_BITS - 1))


@dataclass(frozen=True)
class PreparedCertificate:
    """A certificate checked against the profile and ready for the CA key.

    ``tbs_sha256`` is the hex SHA-256 of the TBSCertificate the key will sign,
    known before the key is used, so the issuance journal can record the intent
    first (see :func:`~scepline_shared.ca.tbs.tbs_sha256`).
    """

    builder: x509.CertificateBuilder = field(repr=False)
    serial: int
    subject: x509.Name
    not_before: datetime
    not_after: datetime
    tbs_sha256: str

    def sign(self, ca: KeyPair) -> x509.Certificate:
        return self.builder.sign(ca.key, SIGNATURE_HASH)


def prepare_certificate(
    *,
    csr: x509.CertificateSigningRequest,
    ca: KeyPair,
    profile: CertificateProfile,
    serial: int,
    now: datetime | None = None,
    signature_verified: bool = False,
    crl_distribution_point: str | None = None,
    names_vouched: bool = False,
    ocsp_url: str | None = None,
    ca_issuers_url: str | None = None,
) -> PreparedCertificate:
    """Everything :func:`issue_certificate` does but signing.

    Checks, in order (each failure raises :class:`PolicyViolation`): the key type
    and size (before the signature, so a huge key costs nothing), the CSR
    self-signature, a readable extensionRequest, the names (see
    :meth:`CertificateProfile.check_names`; ``names_vouched`` says whether the
    challenge provider vouched for them), that the result names someone
    (subject or at least one allowed SAN), the profile's subject and SAN rules
    (:meth:`CertificateProfile.check_rules`) and the EKUs the CSR may ask for
    (:meth:`CertificateProfile.issued_extended_key_usage`).

    The subject is copied byte-for-byte in structure (multi-valued RDNs and string
    types kept). Only the SubjectAlternativeName is taken from the extensionRequest;
    every other extension comes from the profile. SANs are filtered by
    ``profile.allowed_san_types``: disallowed ones are dropped or refused per
    ``profile.on_disallowed_san``. The SAN is critical when the subject is empty
    (RFC 5280 4.2.1.6). notAfter is capped at the CA's notAfter.

    ``now`` must be timezone-aware when given (tests pass a fixed clock).
    ``signature_verified`` skips the self-signature check when the caller
    already verified it over the bytes the client sent (see
    ``scepline_shared.scep.csr``: ``csr`` may then be a DER re-encoding whose
    signature no longer matches).
    """
    if not 0 < serial <= MAX_SERIAL:
        raise ValueError("serial must be positive and fit 20 DER octets")
    distribution = _distribution_points(crl_distribution_point)
    access = _authority_information_access(ocsp_url, ca_issuers_url)
    issued_at = require_aware_utc(now, "now") if now is not None else datetime.now(UTC)

    public_key = _requester_key(csr)
    profile.check_public_key(public_key)
    if not signature_verified:
        _check_signature(csr)
    subject = profile.issued_subject(csr)
    sans = profile.filter_sans(requested_sans(csr))
    profile.check_names(
        subject, sans, ca_subject=ca.certificate.subject, names_vouched=names_vouched
    )
    if not sans and not list(subject):
        raise PolicyViolation("CSR has an empty subject and no allowed subjectAltName")
    profile.check_rules(subject, sans)
    extended_key_usage = profile.issued_extended_key_usage(csr)

    not_before, not_after = _validity(ca.certificate, profile, issued_at)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(profile.key_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority_key_identifier(ca.certificate), critical=False)
    )
    if extended_key_usage:
        eku = x509.ExtendedKeyUsage(list(extended_key_usage))
        builder = builder.add_extension(eku, critical=False)
    if distribution is not None:
        builder = builder.add_extension(distribution, critical=False)
    if access is not None:
        builder = builder.add_extension(access, critical=False)
    if sans:
        empty_subject = not list(subject)
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=empty_subject)
    return PreparedCertificate(
        builder=builder,
        serial=serial,
        subject=subject,
        not_before=not_before,
        not_after=not_after,
        tbs_sha256=tbs_sha256(builder, ca.key),
    )


def issue_certificate(*, ca: KeyPair, **options: Any) -> x509.Certificate:
    """:func:`prepare_certificate` (same arguments), signed with ``ca``'s key.

    Nothing is journaled here: the sign step claims the serial in the store
    between preparing and signing; this one-call form is for tools and tests.
    """
    return prepare_certificate(ca=ca, **options).sign(ca)


def _distribution_points(url: str | None) -> x509.CRLDistributionPoints | None:
    if url is None:
        return None
    parts = urlsplit(url)
    # Checked here, before any signing: a relative or scheme-less URL would be
    # written into every certificate and could never be fetched.
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"CRL distribution point must be an absolute URL, got {url!r}")
    point = x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)],
        relative_name=None,
        reasons=None,
        crl_issuer=None,
    )
    return x509.CRLDistributionPoints([point])


def _authority_information_access(
    ocsp_url: str | None, ca_issuers_url: str | None
) -> x509.AuthorityInformationAccess | None:
    """RFC 5280 4.2.2.1: where relying parties ask OCSP and fetch the issuer."""
    descriptions = []
    for method, url in (
        (AuthorityInformationAccessOID.OCSP, ocsp_url),
        (AuthorityInformationAccessOID.CA_ISSUERS, ca_issuers_url),
    ):
        if url is None:
            continue
        parts = urlsplit(url)
        if not parts.scheme or not parts.netloc:
            raise ValueError(f"authority information access URLs must be absolute, got {url!r}")
        descriptions.append(x509.AccessDescription(method, x509.UniformResourceIdentifier(url)))
    return x509.AuthorityInformationAccess(descriptions) if descriptions else None


def _requester_key(csr: x509.CertificateSigningRequest) -> CertificatePublicKeyTypes:
    try:
        return csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PolicyViolation(f"CSR public key is unsupported: {exc}") from exc


def _check_signature(csr: x509.CertificateSigningRequest) -> None:
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PolicyViolation(f"CSR signature cannot be checked: {exc}") from exc
    if not valid:
        raise PolicyViolation("CSR signature does not verify (no proof of possession)")


def _validity(
    ca_cert: x509.Certificate, profile: CertificateProfile, now: datetime
) -> tuple[datetime, datetime]:
    ca_not_after = ca_cert.not_valid_after_utc
    if ca_not_after <= now:
        raise CaMaterialError(None, f"CA certificate expired at {ca_not_after.isoformat()}")
    not_before = max(
        now - timedelta(seconds=profile.backdate_seconds), ca_cert.not_valid_before_utc
    )
    # A leaf outliving its CA fails validation at the CA's expiry anyway; capping
    # makes the real lifetime visible in the cert and to renewal scheduling.
    not_after = min(now + timedelta(days=profile.validity_days), ca_not_after)
    return not_before, not_after
