"""The simulator's own little PKI for HTTPS on loopback.

A CA (``sim-ca.pem``, the file clients trust through their CA-bundle setting)
and a server certificate for 127.0.0.1, ::1 and localhost signed by it. Files
already in the data directory are reused so a client configured once keeps
trusting the simulator across restarts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scepline_shared.ca import key_usage

__all__ = ["TlsFiles", "ensure_tls_files"]


@dataclass(frozen=True)
class TlsFiles:
    ca_bundle: Path  # sim-ca.pem
    certificate: Path
    private_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "scepline intune simulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def ensure_tls_files(data_dir: Path) -> TlsFiles:
    data_dir.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        ca_bundle=data_dir / "sim-ca.pem",
        certificate=data_dir / "sim-server.pem",
        private_key=data_dir / "sim-server-key.pem",
    )
    if all(p.exists() for p in (files.ca_bundle, files.certificate, files.private_key)):
        server = x509.load_pem_x509_certificate(files.certificate.read_bytes())
        if server.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=1):
            return files
    now = dt.datetime.now(dt.UTC)
    # EC keys: generation is instant, unlike RSA, and every TLS client speaks P-256.
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("scepline intune simulator CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files.ca_bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.certificate.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files.private_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.private_key.chmod(0o600)
    return files
