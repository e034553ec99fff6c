"""Lab CA: a self-signed CA plus an RSA RA, created on first start, reused after.

For development, demos and interop tests. Production CA keys come from a key
ceremony (HSM); they reach the same code as :class:`~scepline_shared.keys.KeyPair`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from scepline_shared.ca._common import SIGNATURE_HASH, authority_key_identifier, key_usage
from scepline_shared.ca.errors import CaMaterialError
from scepline_shared.ca.issue import new_serial
from scepline_shared.ca.material import (
    CaMaterial,
    CaPaths,
    load_certificate,
    locked,
    read_material,
    save_certificate,
)
from scepline_shared.keys import (
    KeyFileError,
    KeyPair,
    SigningKey,
    generate_private_key,
    load_private_key,
    save_private_key,
)

__all__ = ["CERTIFICATE_REQUEST_AGENT", "RA_KEY_BITS", "ensure_lab_ca"]

#: szOID_ENROLLMENT_AGENT, "Certificate Request Agent" EKU (what NDES puts on its RA).
CERTIFICATE_REQUEST_AGENT = ObjectIdentifier("1.3.6.1.4.1.311.20.2.1")
#: SCEP key transport is RSA-only, so the RA is RSA even under an EC CA.
RA_KEY_BITS = 2048

_KeyFactory = Callable[[], SigningKey]
_DEFAULT_SIZES: dict[str, int | str] = {"rsa": 3072, "ec": "P-256"}
# Covers clock skew between the host that creates the CA and the first clients.
_BACKDATE = timedelta(hours=1)

# CA: keyCertSign+cRLSign for issuing, digitalSignature because RFC 8894 2.1.2
# and clients that verify CertReps against the CA want it (micromdm/scep#197).
# No keyEncipherment: clients choose the encryption cert by that bit (certmonger,
# macOS, openxpki-config#14), and it must be the RA, whose key is RSA.
_CA_KEY_USAGE = key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True)
# RA: signs CertReps and decrypts pkcsPKIEnvelopes.
_RA_KEY_USAGE = key_usage(digital_signature=True, key_encipherment=True)
# RA EKU: Certificate Request Agent only. Windows' SCEP client needs *an* EKU on the
# RA (serverAuth or CRA both work, NeySlim/ultimate-ca-manager#228); CRA states
# what the RA is and matches NDES's own RA certs. serverAuth would also make the RA
# cert a valid TLS server cert under a root that Intune pushes to every device, for
# no gain: OpenSSL's default S/MIME purpose check rejects both (any EKU without
# emailProtection), and certmonger ignores purpose errors when verifying CertReps.
_RA_EKU = x509.ExtendedKeyUsage([CERTIFICATE_REQUEST_AGENT])


def ensure_lab_ca(
    data_dir: Path,
    *,
    ca_key_type: Literal["rsa", "ec"] = "rsa",
    ca_key_size: int | str | None = None,
    ca_common_name: str = "scepline lab CA",
    ra_common_name: str = "scepline lab RA",
    validity_days: int = 3650,
) -> CaMaterial:
    """Return the lab CA under ``data_dir/ca/``, creating what is missing.

    ``ca_key_size``: RSA bits (default 3072) or EC curve (default P-256; also
    384/521 or a curve name). The key parameters and names apply only when the
    CA is created; an existing CA is reused as is.

    Safe when several processes start at once: creation runs under an exclusive
    flock on ``data_dir/ca/.lock`` and re-checks the files after acquiring it, so
    the losers load the winner's CA. Each file is written atomically and keys
    before certificates, so an interrupted first start resumes with the key it
    already wrote. A certificate whose key file is missing is an error: the CA
    cert may already be trusted by devices and must not be silently replaced.
    """
    if validity_days <= 0:
        raise ValueError(f"validity_days must be > 0, got {validity_days}")
    if ca_key_type not in _DEFAULT_SIZES:
        raise ValueError(f"unknown CA key type {ca_key_type!r} (expected 'rsa' or 'ec')")
    size = ca_key_size if ca_key_size is not None else _DEFAULT_SIZES[ca_key_type]
    paths = CaPaths.under(data_dir)
    paths.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with locked(paths, exclusive=True):
        if not all(path.exists() for path in paths.files):
            now = datetime.now(UTC)
            ca = _ensure_ca(paths, ca_key_type, size, ca_common_name, validity_days, now)
            _ensure_ra(paths, ca, ra_common_name, validity_days, now)
        # Re-read what is on disk: the same code path as every later start.
        return read_material(paths)


def _ensure_ca(
    paths: CaPaths,
    key_type: Literal["rsa", "ec"],
    size: int | str,
    common_name: str,
    validity_days: int,
    now: datetime,
) -> KeyPair:
    key = _ensure_key(paths.ca_key, paths.ca_cert, lambda: generate_private_key(key_type, size))
    if paths.ca_cert.exists():
        return _pair(key, paths.ca_cert)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=validity_days))
        # pathLen 0: this CA issues only end-entity certs (RA, devices).
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, SIGNATURE_HASH)
    )
    save_certificate(paths.ca_cert, certificate)
    return KeyPair(key=key, certificate=certificate)


def _ensure_ra(
    paths: CaPaths, ca: KeyPair, common_name: str, validity_days: int, now: datetime
) -> KeyPair:
    key = _ensure_key(paths.ra_key, paths.ra_cert, lambda: generate_private_key("rsa", RA_KEY_BITS))
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CaMaterialError(paths.ra_key, "RA key must be RSA (SCEP key transport)")
    if paths.ra_cert.exists():
        return _pair(key, paths.ra_cert)
    not_after = min(now + timedelta(days=validity_days), ca.certificate.not_valid_after_utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_RA_KEY_USAGE, critical=True)
        .add_extension(_RA_EKU, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(authority_key_identifier(ca.certificate), critical=False)
        .sign(ca.key, SIGNATURE_HASH)
    )
    save_certificate(paths.ra_cert, certificate)
    return KeyPair(key=key, certificate=certificate)


def _ensure_key(key_path: Path, cert_path: Path, generate: _KeyFactory) -> SigningKey:
    if key_path.exists():
        try:
            return load_private_key(key_path)
        except KeyFileError as exc:
            raise CaMaterialError(key_path, exc.reason) from exc
    if cert_path.exists():
        raise CaMaterialError(
            key_path, f"missing while {cert_path.name} exists; refusing to replace it"
        )
    key = generate()
    save_private_key(key_path, key)
    return key


def _pair(key: SigningKey, cert_path: Path) -> KeyPair:
    try:
        return KeyPair(key=key, certificate=load_certificate(cert_path))
    except ValueError as exc:
        raise CaMaterialError(cert_path, "does not match its key file") from exc
