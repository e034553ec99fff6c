"""Build the CA's CRL (served by GetCRL and a plain HTTP CDP)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from cryptography import x509

from scepline_shared.ca._common import (
    SIGNATURE_HASH,
    authority_key_identifier,
    require_aware_utc,
)
from scepline_shared.ca.issue import MAX_SERIAL
from scepline_shared.keys import KeyPair, spki_sha256_hex
from scepline_shared.revocation import REASON_FLAGS

__all__ = ["REASON_CODES", "build_crl", "crl_builder", "crl_distribution_url"]

#: RFC 5280 5.3.1 CRLReason codes and their flags (the table: scepline_shared.revocation).
REASON_CODES = REASON_FLAGS


def crl_distribution_url(public_base_url: str, ca_certificate: x509.Certificate) -> str:
    """``<public_base_url>/crl/<issuer_key_id>.crl``, the URL ingress serves a CA's CRL at.

    The key id (:func:`~scepline_shared.keys.spki_sha256_hex` of the CA key) rather
    than the CA name: generations of a CA after a rollover usually share a name,
    and each has its own CRL.
    """
    base = public_base_url.rstrip("/")
    if not base:
        raise ValueError("public_base_url is empty")
    return f"{base}/crl/{spki_sha256_hex(ca_certificate.public_key())}.crl"


def build_crl(
    *,
    ca: KeyPair,
    revoked: Iterable[tuple[int, datetime, int | None]],
    number: int,
    this_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationList:
    """A v2 CRL signed by ``ca``: :func:`crl_builder`, signed."""
    builder = crl_builder(
        ca=ca, revoked=revoked, number=number, this_update=this_update, next_update=next_update
    )
    return builder.sign(ca.key, SIGNATURE_HASH)


def crl_builder(
    *,
    ca: KeyPair,
    revoked: Iterable[tuple[int, datetime, int | None]],
    number: int,
    this_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationListBuilder:
    """A v2 CRL for ``ca`` with CRLNumber ``number`` and an AKI, ready to sign.

    ``revoked`` holds ``(serial, revocation_date, reason_code)``; ``reason_code`` is
    an RFC 5280 CRLReason integer or ``None``. Code 0 (unspecified) is written as
    no reason extension, as RFC 5280 5.3.1 asks. All datetimes must be
    timezone-aware. A serial listed twice is a caller bug and raises ValueError.
    """
    if not 0 <= number <= MAX_SERIAL:
        raise ValueError("CRL number must be non-negative and fit 20 DER octets")
    this_update = require_aware_utc(this_update, "this_update")
    next_update = require_aware_utc(next_update, "next_update")
    if next_update <= this_update:
        raise ValueError("next_update must be after this_update")

    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(authority_key_identifier(ca.certificate), critical=False)
    )
    seen: set[int] = set()
    for serial, revoked_at, reason in revoked:
        if serial in seen:
            raise ValueError(f"serial {serial:x} listed twice")
        seen.add(serial)
        builder = builder.add_revoked_certificate(_entry(serial, revoked_at, reason))
    return builder


def _entry(serial: int, revoked_at: datetime, reason: int | None) -> x509.RevokedCertificate:
    if not 0 < serial <= MAX_SERIAL:
        raise ValueError(f"revoked serial {serial} out of range")
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(serial)
        .revocation_date(require_aware_utc(revoked_at, "revocation date"))
    )
    if reason is not None:
        flag = REASON_CODES.get(reason)
        if flag is None:
            raise ValueError(f"invalid CRLReason code {reason}")
        if flag is not x509.ReasonFlags.unspecified:
            entry = entry.add_extension(x509.CRLReason(flag), critical=False)
    return entry.build()
