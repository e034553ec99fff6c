"""Creating a CA generation: a self-signed CA plus an RSA RA, keys in files or a token.

:func:`ensure_generation` fills in whatever is missing in one generation
directory and is the one place that writes keys and certificates; the callers in
:mod:`scepline_shared.ca.schedule` (``init_ca``, ``ensure_lab_ca``) and
:mod:`scepline_shared.ca.rollover` hold the CA lock around it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from scepline_shared.ca._common import SIGNATURE_HASH, authority_key_identifier, key_usage
from scepline_shared.ca.errors import CaMaterialError
from scepline_shared.ca.issue import new_serial
from scepline_shared.ca.keysource import (
    KeySource,
    Role,
    TokenKeyEntry,
    read_key_index,
    write_key_index,
)
from scepline_shared.ca.material import CaPaths, load_certificate, save_certificate
from scepline_shared.keys import (
    KeyFileError,
    KeyPair,
    SigningKey,
    generate_private_key,
    load_private_key,
    save_private_key,
)
from scepline_shared.keys.pkcs11 import key_matches_certificate
from scepline_shared.log import get_logger

__all__ = [
    "CERTIFICATE_REQUEST_AGENT",
    "DEFAULT_CA_KEY_SIZES",
    "RA_KEY_BITS",
    "ca_certificate",
    "ensure_generation",
    "ensure_role_key",
    "ra_certificate",
]

#: szOID_ENROLLMENT_AGENT, "Certificate Request Agent" EKU (what NDES puts on its RA).
CERTIFICATE_REQUEST_AGENT = ObjectIdentifier("1.3.6.1.4.1.311.20.2.1")
#: SCEP key transport is RSA-only, so the RA is RSA even under an EC CA.
RA_KEY_BITS = 2048
#: CA key size when none is given: RSA bits or EC curve.
DEFAULT_CA_KEY_SIZES: dict[str, int | str] = {"rsa": 3072, "ec": "P-256"}

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

_log = get_logger(__name__)

_Generated = tuple[SigningKey, TokenKeyEntry | None]


def ca_certificate(
    key: SigningKey, common_name: str, *, not_before: datetime, not_after: datetime
) -> x509.Certificate:
    """A self-signed CA certificate for ``key`` (signed by ``key``, in the token if it is there)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # pathLen 0: this CA issues only end-entity certs (RA, devices).
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, SIGNATURE_HASH)
    )


def ra_certificate(
    ca: KeyPair,
    key: rsa.RSAPrivateKey,
    common_name: str,
    *,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """The RA certificate for ``key``, issued by ``ca``; never outlives the CA."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, ca.certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_RA_KEY_USAGE, critical=True)
        .add_extension(_RA_EKU, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(authority_key_identifier(ca.certificate), critical=False)
        .sign(ca.key, SIGNATURE_HASH)
    )


def ensure_generation(
    paths: CaPaths,
    keys: KeySource,
    *,
    generation: int,
    ca_key_type: Literal["rsa", "ec"],
    ca_key_size: int | str | None,
    ca_common_name: str,
    ra_common_name: str,
    not_before: datetime,
    not_after: datetime,
    import_ca_certificate: x509.Certificate | None = None,
) -> None:
    """Create what is missing of one generation in ``paths.directory``.

    The caller holds the exclusive CA lock and has created the directory. Keys
    are written before the certificates that name them (a token key is recorded
    in ``keys.json`` right after generation), so an interrupted run resumes with
    the key it already made. A certificate whose key is gone is an error: the CA
    certificate may already be trusted by devices and must not be silently replaced.

    A token key already under the generation's label (a key ceremony, or a run
    interrupted before ``keys.json`` was written) is used instead of generating one.
    """
    if ca_key_type not in DEFAULT_CA_KEY_SIZES:
        raise ValueError(f"unknown CA key type {ca_key_type!r} (expected 'rsa' or 'ec')")
    size = ca_key_size if ca_key_size is not None else DEFAULT_CA_KEY_SIZES[ca_key_type]
    index = read_key_index(paths.keys_index)
    if import_ca_certificate is not None:
        if generation != 0:
            raise ValueError("only generation 0 can import an existing CA certificate")
        _import_ca(paths, keys, index, import_ca_certificate)

    def new_ca_key() -> _Generated:
        if keys.in_token("ca"):
            return keys.generate(
                keys.label("ca", generation), key_type=ca_key_type, size_or_curve=size
            )
        return generate_private_key(ca_key_type, size), None

    def new_ra_key() -> _Generated:
        if keys.in_token("ra"):
            return keys.generate(
                keys.label("ra", generation), key_type="rsa", size_or_curve=RA_KEY_BITS
            )
        return generate_private_key("rsa", RA_KEY_BITS), None

    ca_key = _ensure_key(paths, keys, index, "ca", generation, new_ca_key)
    if paths.ca_cert.exists():
        ca = _pair(ca_key, paths.ca_cert)
    else:
        certificate = ca_certificate(
            ca_key, ca_common_name, not_before=not_before, not_after=not_after
        )
        save_certificate(paths.ca_cert, certificate)
        ca = KeyPair(key=ca_key, certificate=certificate)

    ra_key = _ensure_key(paths, keys, index, "ra", generation, new_ra_key)
    if not isinstance(ra_key, rsa.RSAPrivateKey):
        raise CaMaterialError(
            _key_location(paths, index, "ra"), "RA key must be RSA (SCEP key transport)"
        )
    if not paths.ra_cert.exists():
        certificate = ra_certificate(
            ca, ra_key, ra_common_name, not_before=not_before, not_after=not_after
        )
        save_certificate(paths.ra_cert, certificate)
    else:
        _pair(ra_key, paths.ra_cert)


def ensure_role_key(
    paths: CaPaths,
    keys: KeySource,
    role: Role,
    generation: int,
    generate: Callable[[], _Generated],
    *,
    replace_certificate: bool = False,
) -> SigningKey:
    """The key of ``role`` in one generation, generated if missing (the caller
    holds the exclusive CA lock). ``replace_certificate``: a certificate whose key
    is gone may be replaced (the OCSP responder's, short-lived and re-issued by
    the signer), instead of being an error (the CA's and the RA's)."""
    index = read_key_index(paths.keys_index)
    return _ensure_key(
        paths, keys, index, role, generation, generate, replace_certificate=replace_certificate
    )


def _ensure_key(
    paths: CaPaths,
    keys: KeySource,
    index: dict[Role, TokenKeyEntry],
    role: Role,
    generation: int,
    generate: Callable[[], _Generated],
    *,
    replace_certificate: bool = False,
) -> SigningKey:
    key_path = paths.key(role)
    cert_path = None if replace_certificate else paths.certificate(role)
    entry = index.get(role)
    if entry is not None:
        return keys.load(entry, where=paths.keys_index)
    if key_path.exists():
        return _load_file_key(key_path)
    if keys.in_token(role):
        found = keys.find(keys.label(role, generation))
        if found is not None:
            key, entry = found
            if (
                cert_path is not None
                and cert_path.exists()
                and load_certificate(cert_path).public_key() != key.public_key()
            ):
                raise CaMaterialError(
                    cert_path,
                    f"no key is recorded for it and the token key {entry} does not match it; "
                    "refusing to replace it",
                )
            _log.info("using the key already in the token", role=role, hsm_label=entry.label)
            _record(paths, index, role, entry)
            return key
    if cert_path is not None and cert_path.exists():
        missing = paths.keys_index if keys.in_token(role) else key_path
        raise CaMaterialError(
            missing, f"missing while {cert_path.name} exists; refusing to replace it"
        )
    key, entry = generate()
    if entry is not None:
        _record(paths, index, role, entry)
    else:
        save_private_key(key_path, key)
    return key


def _import_ca(
    paths: CaPaths,
    keys: KeySource,
    index: dict[Role, TokenKeyEntry],
    certificate: x509.Certificate,
) -> None:
    """Adopt an existing CA certificate whose key is already in place."""
    if paths.ca_cert.exists():
        if load_certificate(paths.ca_cert) != certificate:
            raise CaMaterialError(
                paths.ca_cert, "holds a different CA certificate; refusing to replace it"
            )
        return  # imported before: nothing to do
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CaMaterialError(None, "the certificate to import is not a CA certificate")
    entry = index.get("ca")
    if entry is not None:
        key = keys.load(entry, where=paths.keys_index)
    elif paths.ca_key.exists():
        key = _load_file_key(paths.ca_key)
    elif keys.in_token("ca"):
        label = keys.label("ca", 0)
        found = keys.find(label)
        if found is None:
            token = keys.require_token("importing a CA certificate")
            raise CaMaterialError(
                None,
                f"no private key labelled {label!r} on token {token.label!r} "
                "for the CA certificate to import",
            )
        key, entry = found
    else:
        raise CaMaterialError(paths.ca_key, "missing: put the CA key there before importing")
    if not key_matches_certificate(key, certificate, prove=True):
        where = str(entry) if entry is not None else paths.ca_key.name
        raise CaMaterialError(
            None, f"the CA key ({where}) does not match the certificate to import"
        )
    if entry is not None and "ca" not in index:
        _record(paths, index, "ca", entry)
    save_certificate(paths.ca_cert, certificate)
    _log.info("CA certificate imported", subject=certificate.subject.rfc4514_string())


def _record(
    paths: CaPaths, index: dict[Role, TokenKeyEntry], role: Role, entry: TokenKeyEntry
) -> None:
    index[role] = entry
    write_key_index(paths.keys_index, index)


def _key_location(paths: CaPaths, index: dict[Role, TokenKeyEntry], role: Role) -> Path:
    return paths.keys_index if role in index else paths.key(role)


def _load_file_key(path: Path) -> SigningKey:
    try:
        return load_private_key(path)
    except KeyFileError as exc:
        raise CaMaterialError(exc.path, exc.reason) from exc


def _pair(key: SigningKey, cert_path: Path) -> KeyPair:
    try:
        return KeyPair(key=key, certificate=load_certificate(cert_path))
    except ValueError as exc:
        raise CaMaterialError(cert_path, "does not match its key") from exc
