"""Small throwaway PKI for codec tests: self-signed RA and client identities, and
pkiMessages re-signed with any SignerInfo signature algorithm."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import cache

from asn1crypto import algos, cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from scepline_devtools.scep_client import Requester, build_csr, self_signed_requester


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


def resigned(
    pki_message: bytes,
    signature_algorithm: algos.SignedDigestAlgorithm,
    sign: Callable[[bytes], bytes],
) -> bytes:
    """``pki_message`` with its one SignerInfo signed again: ``sign`` gets the
    signed attributes as they are signed (SET OF), the SignerInfo names
    ``signature_algorithm``. The signer certificate and everything else stay."""
    info = cms.ContentInfo.load(pki_message)
    signer_info = info["content"]["signer_infos"][0]
    to_sign = b"\x31" + signer_info["signed_attrs"].dump()[1:]
    signer_info["signature_algorithm"] = signature_algorithm
    signer_info["signature"] = sign(to_sign)
    return info.dump(force=True)


def rsassa_pss(
    hash_name: str = "sha256", mgf_hash_name: str | None = None, salt_length: int = 32
) -> algos.SignedDigestAlgorithm:
    """id-RSASSA-PSS with explicit parameters; strongSwan's are the defaults
    (SHA-256, MGF1 with SHA-256, a salt as long as the hash)."""
    return algos.SignedDigestAlgorithm(
        {
            "algorithm": "rsassa_pss",
            "parameters": algos.RSASSAPSSParams(
                {
                    "hash_algorithm": {"algorithm": hash_name},
                    "mask_gen_algorithm": {
                        "algorithm": "mgf1",
                        "parameters": {"algorithm": mgf_hash_name or hash_name},
                    },
                    "salt_length": salt_length,
                }
            ),
        }
    )
