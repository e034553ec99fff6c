"""Test helpers: CSR construction, token key sources and the real openssl binary."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

from asn1crypto.core import UTF8String
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from scepline_shared.ca import UPN_OID, KeySource
from scepline_shared.keys.pkcs11 import Pkcs11Token

INTUNE_SID_URI = "tag:microsoft.com,2022-09-14:sid:S-1-5-21-1004336348-1177238915-682003330-512"

_RSA_CACHE: dict[int, rsa.RSAPrivateKey] = {}


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """A cached RSA key per size: generation dominates test time otherwise."""
    if bits not in _RSA_CACHE:
        _RSA_CACHE[bits] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _RSA_CACHE[bits]


def upn(value: str) -> x509.OtherName:
    return x509.OtherName(UPN_OID, UTF8String(value).dump())


def name(common_name: str = "device-1", **extra: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    oids = {"o": NameOID.ORGANIZATION_NAME, "ou": NameOID.ORGANIZATIONAL_UNIT_NAME}
    attrs += [x509.NameAttribute(oids[k], v) for k, v in extra.items()]
    return x509.Name(attrs)


def make_csr(
    *,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | None = None,
    subject: x509.Name | None = None,
    sans: Sequence[x509.GeneralName] = (),
    extra: Sequence[x509.ExtensionType] = (),
) -> x509.CertificateSigningRequest:
    key = key if key is not None else rsa_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        subject if subject is not None else name()
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    for ext in extra:
        builder = builder.add_extension(ext, critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def pem(obj: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


def write_pem(path: Path, *objs: x509.Certificate | x509.CertificateRevocationList) -> Path:
    path.write_bytes(b"".join(pem(o) for o in objs))
    return path


def openssl(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, cwd=cwd, check=False
    )


def token_keys(token: Pkcs11Token, *, ra_in_token: bool = True) -> KeySource:
    """A key source with labels no other test uses (one token for the whole run)."""
    tag = uuid.uuid4().hex[:10]
    return KeySource(
        backend="pkcs11",
        token=token,
        ca_key_label=f"ca-{tag}",
        ra_key_label=f"ra-{tag}",
        ra_in_token=ra_in_token,
    )
