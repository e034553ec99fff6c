"""The delegated OCSP responder of a CA generation: its key and its certificate.

Each generation has one responder (RFC 6960 4.2.2.2): a key beside the RA's
(``ocsp.key``, or in the token when the RA key is, labelled
``scepline-ocsp[-g<n>]``) and ``ocsp.crt``, a short-lived certificate issued by
that generation's CA with id-kp-OCSPSigning and id-pkix-ocsp-nocheck. The
signer renews the certificate (same key) when half of its life has passed;
responders read both files and pick up a renewal when ``ocsp.crt`` changes.

So a responder never needs the CA key, and a stolen responder key lets its
holder lie about status only until the short certificate expires.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scepline_shared.ca._common import (
    authority_key_identifier,
    key_usage,
    require_aware_utc,
)
from scepline_shared.ca.errors import CaMaterialError
from scepline_shared.ca.issue import PreparedCertificate
from scepline_shared.ca.keysource import KeySource, TokenKeyEntry, read_key_index
from scepline_shared.ca.lab import ensure_role_key
from scepline_shared.ca.material import CaPaths, load_certificate, save_certificate
from scepline_shared.ca.tbs import tbs_sha256
from scepline_shared.keys import KeyPair, SigningKey, generate_private_key, load_private_key

__all__ = [
    "RESPONDER_BACKDATE",
    "ensure_responder_key",
    "load_responder",
    "prepare_responder_certificate",
    "responder_renewal_due",
    "save_responder_certificate",
]

# Relying parties' clocks run behind too: the same backdating as issued certificates.
RESPONDER_BACKDATE = timedelta(minutes=5)


def ensure_responder_key(
    paths: CaPaths, keys: KeySource, *, generation: int, ca: KeyPair
) -> SigningKey:
    """The responder key of one generation, generated if missing (the caller holds
    the exclusive CA lock). Same family as the CA's key: an RSA CA gets an
    RSA-2048 responder (NPS and older appliances verify RSA), an EC CA P-256."""
    key_type = "rsa" if isinstance(ca.key, rsa.RSAPrivateKey) else "ec"
    size: int | str = 2048 if key_type == "rsa" else "P-256"

    def generate() -> tuple[SigningKey, TokenKeyEntry | None]:
        if keys.in_token("ocsp"):
            return keys.generate(
                keys.label("ocsp", generation), key_type=key_type, size_or_curve=size
            )
        return generate_private_key(key_type, size), None

    return ensure_role_key(paths, keys, "ocsp", generation, generate, replace_certificate=True)


def prepare_responder_certificate(
    ca: KeyPair,
    public_key: CertificatePublicKeyTypes,
    *,
    serial: int,
    now: datetime,
    validity: timedelta,
) -> PreparedCertificate:
    """The responder certificate for ``public_key``, ready for ``ca`` to sign; its
    TBS hash is known now, so the caller can journal it before signing."""
    now = require_aware_utc(now, "now")
    ca_cert = ca.certificate
    common_name = _common_name(ca_cert) + " OCSP responder"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    not_before = max(now - RESPONDER_BACKDATE, ca_cert.not_valid_before_utc)
    not_after = min(now + validity, ca_cert.not_valid_after_utc)
    if not_after <= now:
        raise CaMaterialError(None, "the CA certificate has expired: no responder can be issued")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        # RFC 6960 4.2.2.2.1: clients need not check the responder's own status.
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority_key_identifier(ca_cert), critical=False)
    )
    return PreparedCertificate(
        builder=builder,
        serial=serial,
        subject=subject,
        not_before=not_before,
        not_after=not_after,
        tbs_sha256=tbs_sha256(builder, ca.key),
    )


def responder_renewal_due(
    certificate: x509.Certificate | None,
    *,
    ca: x509.Certificate,
    public_key: CertificatePublicKeyTypes,
    now: datetime,
) -> bool:
    """Whether the generation needs a new responder certificate: none yet, one
    for another key or CA, or more than half of its life gone."""
    if certificate is None or certificate.public_key() != public_key:
        return True
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return True
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    return require_aware_utc(now, "now") >= start + (end - start) / 2


def save_responder_certificate(paths: CaPaths, certificate: x509.Certificate) -> None:
    save_certificate(paths.ocsp_cert, certificate, overwrite=True)


def load_responder(paths: CaPaths, keys: KeySource) -> KeyPair | None:
    """The generation's responder (key and certificate), or None while the signer
    has not issued one yet. The key is looked up where ``keys.json`` says."""
    if not paths.ocsp_cert.exists():
        return None
    certificate = load_certificate(paths.ocsp_cert)
    entry = read_key_index(paths.keys_index).get("ocsp")
    key: SigningKey
    if entry is not None:
        key = keys.load(entry, where=paths.keys_index)
    elif paths.ocsp_key.exists():
        key = load_private_key(paths.ocsp_key)
    else:
        return None
    try:
        return KeyPair(key=key, certificate=certificate)
    except ValueError:
        return None  # the certificate is being replaced for a new key: read again later


def _common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else "scepline CA"
    return value if isinstance(value, str) else value.decode(errors="replace")
