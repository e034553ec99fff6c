"""Small throwaway PKI for codec tests: self-signed RA and client identities."""

from __future__ import annotations

import datetime as dt
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from scepline_shared.scep_client import Requester, build_csr, self_signed_requester


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@cache
def rsa_key(label: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """One key per label per test session: RSA generation is the slow part."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def self_signed(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, cn: str) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@cache
def requester(label: str = "client") -> Requester:
    return self_signed_requester(rsa_key(label), f"SCEP SIGNER {label}")


def csr_for(
    req: Requester, cn: str = "device-1", challenge: str | None = "secret"
) -> x509.CertificateSigningRequest:
    return build_csr(req.key, name(cn), challenge=challenge)
