"""KeyPair and spki_sha256_hex."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from scepline_shared.keys import KeyPair, SigningKey, generate_private_key, spki_sha256_hex


def _self_signed(key: SigningKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return generate_private_key("ec", "P-256")


def test_spki_sha256_hex_is_hash_of_der_spki(key: SigningKey) -> None:
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = spki_sha256_hex(key.public_key())
    assert digest == hashlib.sha256(spki).hexdigest()
    assert len(digest) == 64 and digest == digest.lower()
    assert digest != spki_sha256_hex(generate_private_key("ec", "P-256").public_key())
    # Works for any public key type, e.g. a requester's Ed25519 key.
    assert len(spki_sha256_hex(ed25519.Ed25519PrivateKey.generate().public_key())) == 64


def test_key_pair_matches(key: SigningKey) -> None:
    cert = _self_signed(key)
    pair = KeyPair(key=key, certificate=cert)
    assert pair.key_id == spki_sha256_hex(key.public_key())
    with pytest.raises(dataclasses.FrozenInstanceError):
        pair.key = key  # type: ignore[misc]


def test_key_pair_refuses_mismatch(key: SigningKey) -> None:
    other = generate_private_key("rsa", 2048)
    with pytest.raises(ValueError, match="does not match"):
        KeyPair(key=other, certificate=_self_signed(key))


def test_key_pair_refuses_wrong_types(key: SigningKey) -> None:
    with pytest.raises(TypeError):
        KeyPair(key=ed25519.Ed25519PrivateKey.generate(), certificate=_self_signed(key))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        KeyPair(key=key, certificate=b"pem")  # type: ignore[arg-type]
