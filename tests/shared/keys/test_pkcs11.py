"""PKCS#11 keys in a real SoftHSM2 token: generation, lookup, sign, decrypt.

Keys are generated inside the token; every signature is checked with the
public key alone, by cryptography, so the token path is judged from outside.
Sessions, threads, reconnects and fork: test_pkcs11_token.py.
"""

from __future__ import annotations

import copy
import os

import pkcs11
import pytest
from asn1crypto.core import OctetString
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11e

from scepline_shared.keys import KeyPair
from scepline_shared.keys.pkcs11 import (
    HsmError,
    KeyNotExtractable,
    KeyNotFound,
    Pkcs11RsaPrivateKey,
    Pkcs11Token,
    decode_ec_point,
    generate_ca_keys,
    key_matches_certificate,
    load_private_key,
)
from tests.fixtures.softhsm import SoftHsmKeys
from tests.support.pki import self_signed

HASHES = [hashes.SHA1(), hashes.SHA224(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()]
MESSAGE = b"to be signed inside the token"


def verify_rsa_pkcs1(key: rsa.RSAPrivateKey, signature: bytes, data: bytes = MESSAGE) -> None:
    key.public_key().verify(signature, data, padding.PKCS1v15(), hashes.SHA256())


# -- key generation and lookup ---------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind", "size"),
    [
        ("rsa-2048", rsa.RSAPrivateKey, 2048),
        ("rsa-3072", rsa.RSAPrivateKey, 3072),
        ("p-256", ec.EllipticCurvePrivateKey, 256),
        ("p-384", ec.EllipticCurvePrivateKey, 384),
    ],
)
def test_generated_keys_are_cryptography_keys(softhsm_keys: SoftHsmKeys, spec, kind, size):
    key = softhsm_keys[spec]
    assert isinstance(key, kind)
    assert key.key_size == size
    assert key.public_key().key_size == size
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert key.curve.name == {256: "secp256r1", 384: "secp384r1"}[size]


@pytest.mark.parametrize("spec", ["rsa-2048", "p-256"])
def test_load_by_label_or_id_gives_the_same_public_key(
    softhsm_token: Pkcs11Token, softhsm_keys: SoftHsmKeys, spec
):
    generated = softhsm_keys[spec]
    by_label = load_private_key(softhsm_token, f"test-{spec}")
    by_id = load_private_key(softhsm_token, id=generated.ref.id)
    assert type(by_label) is type(generated)
    assert by_label.public_key() == generated.public_key() == by_id.public_key()


def test_ec_point_read_from_the_token_is_der_wrapped(
    softhsm_token: Pkcs11Token, softhsm_keys: SoftHsmKeys
):
    """SoftHSM wraps CKA_EC_POINT in an OCTET STRING (docs/specs/hsm-and-cms.md,
    "EC public points"); we read it right."""
    key = softhsm_keys.ec()
    raw = softhsm_token.run(
        lambda s: bytes(
            s.get_key(object_class=ObjectClass.PUBLIC_KEY, id=key.ref.id)[Attribute.EC_POINT]
        )
    )
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    assert raw == b"\x04\x41" + point


@pytest.mark.parametrize(
    "curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()], ids=lambda c: c.name
)
def test_ec_point_may_come_raw_or_wrapped(curve: ec.EllipticCurve):
    """PKCS#11 (and SoftHSM) wrap CKA_EC_POINT in an OCTET STRING; some HSMs don't
    (docs/specs/hsm-and-cms.md, "EC public points")."""
    public = ec.generate_private_key(curve).public_key()
    for form in (PublicFormat.UncompressedPoint, PublicFormat.CompressedPoint):
        raw = public.public_bytes(Encoding.X962, form)
        wrapped = OctetString(raw).dump()
        assert decode_ec_point(raw, curve) == raw
        assert decode_ec_point(wrapped, curve) == raw
    with pytest.raises(HsmError, match="CKA_EC_POINT"):
        decode_ec_point(b"\x04\x05junk", curve)


def test_missing_key_is_key_not_found(softhsm_token: Pkcs11Token):
    with pytest.raises(KeyNotFound, match="no-such-key"):
        load_private_key(softhsm_token, "no-such-key")


def test_generation_refuses_a_used_label(softhsm_token: Pkcs11Token, softhsm_keys: SoftHsmKeys):
    softhsm_keys["rsa-2048"]
    with pytest.raises(ValueError, match="already holds"):
        generate_ca_keys(
            softhsm_token, key_type="rsa", size_or_curve=2048, label="test-rsa-2048", id="7f"
        )


def test_generation_refuses_weak_or_unknown_parameters(softhsm_token: Pkcs11Token):
    with pytest.raises(ValueError, match="< 2048"):
        generate_ca_keys(softhsm_token, key_type="rsa", size_or_curve=1024, label="w", id="70")
    with pytest.raises(ValueError, match="unsupported EC curve"):
        generate_ca_keys(softhsm_token, key_type="ec", size_or_curve="P-192", label="w", id="70")


# -- the private key stays in the token -----------------------------------------


@pytest.mark.parametrize("spec", ["rsa-2048", "p-256"])
def test_private_key_is_sensitive_and_never_extractable(
    softhsm_token: Pkcs11Token, softhsm_keys: SoftHsmKeys, spec
):
    key = softhsm_keys[spec]

    def attributes(session: pkcs11.Session) -> dict:
        private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key.ref.id)
        return {
            attribute: private[attribute]
            for attribute in (
                Attribute.SENSITIVE,
                Attribute.ALWAYS_SENSITIVE,
                Attribute.EXTRACTABLE,
                Attribute.NEVER_EXTRACTABLE,
                Attribute.LOCAL,
                Attribute.PRIVATE,
                Attribute.TOKEN,
                Attribute.UNWRAP,
                Attribute.DERIVE,
            )
        }

    assert softhsm_token.run(attributes) == {
        Attribute.SENSITIVE: True,
        Attribute.ALWAYS_SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.NEVER_EXTRACTABLE: True,
        Attribute.LOCAL: True,
        Attribute.PRIVATE: True,
        Attribute.TOKEN: True,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
    }
    secret = Attribute.PRIVATE_EXPONENT if spec.startswith("rsa") else Attribute.VALUE

    def read_secret(session: pkcs11.Session) -> object:
        return session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key.ref.id)[secret]

    with pytest.raises(p11e.AttributeSensitive):
        softhsm_token.run(read_secret)
    with pytest.raises(KeyNotExtractable):
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    with pytest.raises(KeyNotExtractable):
        key.private_numbers()


# -- signing --------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", HASHES, ids=lambda h: h.name)
@pytest.mark.parametrize("spec", ["rsa-2048", "rsa-3072"])
def test_rsa_pkcs1v15_signatures_verify(softhsm_keys: SoftHsmKeys, spec, algorithm):
    key = softhsm_keys.rsa(spec)
    signature = key.sign(MESSAGE, padding.PKCS1v15(), algorithm)
    key.public_key().verify(signature, MESSAGE, padding.PKCS1v15(), algorithm)


@pytest.mark.parametrize("algorithm", HASHES, ids=lambda h: h.name)
@pytest.mark.parametrize(
    "salt", [padding.PSS.DIGEST_LENGTH, padding.PSS.MAX_LENGTH, 0], ids=["digest", "max", "0"]
)
def test_rsa_pss_signatures_verify(softhsm_keys: SoftHsmKeys, algorithm, salt):
    key = softhsm_keys.rsa("rsa-3072")
    pss = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=salt)
    signature = key.sign(MESSAGE, pss, algorithm)
    key.public_key().verify(
        signature,
        MESSAGE,
        padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO),
        algorithm,
    )


def test_rsa_prehashed_signature_verifies(softhsm_keys: SoftHsmKeys):
    key = softhsm_keys.rsa()
    digest = hashes.Hash(hashes.SHA384())
    digest.update(MESSAGE)
    signature = key.sign(digest.finalize(), padding.PKCS1v15(), Prehashed(hashes.SHA384()))
    key.public_key().verify(signature, MESSAGE, padding.PKCS1v15(), hashes.SHA384())


@pytest.mark.parametrize("algorithm", [*HASHES, hashes.SHA3_256()], ids=lambda h: h.name)
@pytest.mark.parametrize("spec", ["p-256", "p-384"])
def test_ecdsa_signatures_are_der_and_verify(softhsm_keys: SoftHsmKeys, spec, algorithm):
    key = softhsm_keys.ec(spec)
    signature = key.sign(MESSAGE, ec.ECDSA(algorithm))
    assert signature[0] == 0x30  # DER Ecdsa-Sig-Value, not PKCS#11's raw r||s
    key.public_key().verify(signature, MESSAGE, ec.ECDSA(algorithm))


def test_ecdsa_prehashed_signature_verifies(softhsm_keys: SoftHsmKeys):
    key = softhsm_keys.ec()
    digest = hashes.Hash(hashes.SHA256())
    digest.update(MESSAGE)
    signature = key.sign(digest.finalize(), ec.ECDSA(Prehashed(hashes.SHA256())))
    key.public_key().verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))


def test_unsupported_requests_are_refused_before_the_token(softhsm_keys: SoftHsmKeys):
    rsa_token_key = softhsm_keys.rsa()
    ec_token_key = softhsm_keys.ec()
    with pytest.raises(UnsupportedAlgorithm):
        rsa_token_key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA3_256())
    with pytest.raises(ValueError, match="salt length"):
        rsa_token_key.sign(
            MESSAGE, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO), hashes.SHA256()
        )
    with pytest.raises(UnsupportedAlgorithm, match="deterministic"):
        ec_token_key.sign(MESSAGE, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    with pytest.raises(UnsupportedAlgorithm):
        ec_token_key.exchange(ec.ECDH(), ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(ValueError, match="prehashed"):
        ec_token_key.sign(b"short", ec.ECDSA(Prehashed(hashes.SHA256())))


def test_copies_are_the_same_token_key(softhsm_keys: SoftHsmKeys):
    key = softhsm_keys.rsa()
    assert copy.copy(key) is key
    assert copy.deepcopy(key) is key


# -- decryption ------------------------------------------------------------------


def test_pkcs1v15_decrypt(softhsm_keys: SoftHsmKeys):
    key = softhsm_keys.rsa()
    secret = os.urandom(32)
    ciphertext = key.public_key().encrypt(secret, padding.PKCS1v15())
    assert key.decrypt(ciphertext, padding.PKCS1v15()) == secret


def test_oaep_sha1_decrypt(softhsm_keys: SoftHsmKeys):
    key = softhsm_keys.rsa("rsa-3072")
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    ciphertext = key.public_key().encrypt(b"content key", oaep)
    assert key.decrypt(ciphertext, oaep) == b"content key"


def test_oaep_sha256_is_a_softhsm_limitation_reported_as_value_error(softhsm_keys: SoftHsmKeys):
    """SoftHSM 2.6 does OAEP with SHA-1 only (CKR_ARGUMENTS_BAD otherwise); real
    HSMs do SHA-256. Whatever the reason, the caller sees a bare ValueError."""
    key = softhsm_keys.rsa()
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    ciphertext = key.public_key().encrypt(b"content key", oaep)
    try:
        assert key.decrypt(ciphertext, oaep) == b"content key"
    except ValueError as exc:
        assert type(exc) is ValueError


@pytest.mark.parametrize(
    "ciphertext",
    [
        pytest.param(lambda pub: bytes(pub.key_size // 8), id="zeros"),
        pytest.param(lambda pub: b"\x01" * 10, id="short"),
        pytest.param(lambda pub: b"\xff" * (pub.key_size // 8), id="above-modulus"),
        pytest.param(
            lambda pub: _flip(pub.encrypt(b"k" * 16, padding.PKCS1v15()), 100), id="flipped"
        ),
    ],
)
def test_decrypt_failure_is_a_bare_value_error(softhsm_keys: SoftHsmKeys, ciphertext):
    """RFC 3218 (docs/specs/hsm-and-cms.md, "Decryption failures must all look alike"):
    nothing about the failure (type, cause) leaks."""
    key = softhsm_keys.rsa()
    with pytest.raises(ValueError) as caught:
        key.decrypt(ciphertext(key.public_key()), padding.PKCS1v15())
    assert type(caught.value) is ValueError
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def _flip(data: bytes, index: int) -> bytes:
    mutable = bytearray(data)
    mutable[index] ^= 0xFF
    return bytes(mutable)


# -- matching the certificate ----------------------------------------------------


def test_key_matches_its_certificate_only(softhsm_keys: SoftHsmKeys):
    rsa_token_key = softhsm_keys.rsa()
    ec_token_key = softhsm_keys.ec()
    rsa_certificate = self_signed(rsa_token_key, "token RSA")
    ec_certificate = self_signed(ec_token_key, "token EC")
    assert key_matches_certificate(rsa_token_key, rsa_certificate)
    assert key_matches_certificate(ec_token_key, ec_certificate)
    assert not key_matches_certificate(rsa_token_key, ec_certificate)
    assert not key_matches_certificate(softhsm_keys.rsa("rsa-3072"), rsa_certificate)
    # KeyPair compares public keys the same way.
    assert KeyPair(key=ec_token_key, certificate=ec_certificate).key is ec_token_key


def test_proof_catches_a_public_key_object_paired_with_the_wrong_private_key(
    softhsm_keys: SoftHsmKeys,
):
    """The public keys agree, yet the private key behind the label signs for another."""
    other = softhsm_keys.rsa("rsa-3072")
    mispaired = Pkcs11RsaPrivateKey(other.token, other.ref, softhsm_keys.rsa().public_key())
    certificate = self_signed(softhsm_keys.rsa(), "token RSA")
    assert key_matches_certificate(mispaired, certificate, prove=False)
    assert not key_matches_certificate(mispaired, certificate)
