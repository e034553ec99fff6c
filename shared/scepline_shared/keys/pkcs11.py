"""PKCS#11 key backend: HSM keys behind cryptography's private-key ABCs.

::

    config = Pkcs11Config(module=..., token_label="scep-ca", pin=pin,
                          ca_key=Pkcs11KeyRef(label="ca-rsa", id=b"\\x01"))
    token = Pkcs11Token(config)          # opens nothing yet: open after fork
    ca_key = load_private_key(token, config.ca_key.label, id=config.ca_key.id)
    if not key_matches_certificate(ca_key, ca_certificate):
        raise SystemExit("CA key and certificate differ")
    KeyPair(key=ca_key, certificate=ca_certificate)   # then issue/CRL/CMS as usual

Keys normally come from a key ceremony with vendor tools; :func:`generate_ca_keys`
serves tests, the lab and ceremonies on SoftHSM-like tokens.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Literal

import pkcs11
from asn1crypto import core
from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11.util.ec import encode_named_curve_parameters

from scepline_shared.keys.file import SigningKey
from scepline_shared.keys.parameters import key_parameters
from scepline_shared.keys.pkcs11_keys import Pkcs11EcPrivateKey, Pkcs11RsaPrivateKey, find_key
from scepline_shared.keys.pkcs11_token import (
    SESSION_LOST_ERRORS,
    HsmError,
    KeyNotExtractable,
    KeyNotFound,
    Pkcs11Config,
    Pkcs11KeyRef,
    Pkcs11Token,
    TokenUnavailable,
    normalise_key_id,
)

__all__ = [
    "SESSION_LOST_ERRORS",
    "HsmError",
    "KeyNotExtractable",
    "KeyNotFound",
    "Pkcs11Config",
    "Pkcs11EcPrivateKey",
    "Pkcs11KeyRef",
    "Pkcs11PrivateKey",
    "Pkcs11RsaPrivateKey",
    "Pkcs11Token",
    "TokenUnavailable",
    "decode_ec_point",
    "generate_ca_keys",
    "key_matches_certificate",
    "load_private_key",
]

Pkcs11PrivateKey = Pkcs11RsaPrivateKey | Pkcs11EcPrivateKey


def load_private_key(
    token: Pkcs11Token, label: str | None = None, *, id: bytes | str | None = None
) -> Pkcs11PrivateKey:
    """The private key with this CKA_LABEL and/or CKA_ID, as a cryptography key.

    The public key is read once, now, from the token's public key object (found
    by the private key's CKA_ID, else the same label); an RSA key with no public
    object falls back to the private object's modulus and exponent.
    """
    ref = Pkcs11KeyRef(label=label, id=normalise_key_id(id))

    def operation(session: pkcs11.Session) -> Pkcs11PrivateKey:
        with _wrapped_errors(f"reading {ref} on {token.label!r}"):
            private = find_key(token, session, ObjectClass.PRIVATE_KEY, ref)
            key_type = private[Attribute.KEY_TYPE]
            if key_type == KeyType.RSA:
                return Pkcs11RsaPrivateKey(token, ref, _rsa_public(session, private))
            if key_type == KeyType.EC:
                return Pkcs11EcPrivateKey(token, ref, _ec_public(session, private))
        raise UnsupportedAlgorithm(f"{ref} on {token.label!r} is a {key_type!r} key")

    return token.run(operation)


def generate_ca_keys(
    token: Pkcs11Token,
    *,
    key_type: Literal["rsa", "ec"],
    size_or_curve: int | str | ec.EllipticCurve,
    label: str,
    id: bytes | str,
) -> Pkcs11PrivateKey:
    """Generate a key pair inside the token and return the private key adapter.

    The private key is a token object that is private, sensitive and never
    extractable, allowed to sign (and, for RSA, decrypt: SCEP key transport) and
    nothing else (no wrap/unwrap/derive). ``rsa``: modulus bits (>= 2048), e=65537;
    ``ec``: P-256/P-384/P-521 by size, name or curve object. Refuses a label or id
    already used by a key, so later lookups stay unambiguous.
    """
    key_id = normalise_key_id(id)
    if not label or key_id is None:
        raise ValueError("generate_ca_keys needs a non-empty label and id")
    ref = Pkcs11KeyRef(label=label, id=key_id)
    bits_or_curve = key_parameters(key_type, size_or_curve)

    def operation(session: pkcs11.Session) -> Pkcs11PrivateKey:
        with _wrapped_errors(f"key generation on {token.label!r}"):
            for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                for criterion in ({Attribute.LABEL: label}, {Attribute.ID: key_id}):
                    if list(session.get_objects({Attribute.CLASS: object_class, **criterion})):
                        raise ValueError(f"{token.label!r} already holds a key with {criterion}")
            # Token objects need a R/W session; the app is already logged in, so
            # this one needs no PIN (and a second C_Login would be refused).
            rw = session if session.rw else session.token.open(rw=True)
            try:
                return _generate(token, rw, ref, bits_or_curve)
            finally:
                if rw is not session:
                    with contextlib.suppress(p11e.PKCS11Error):
                        rw.close()  # opened without a PIN, so no C_Logout

    return token.run(operation)


_RSA_CAPABILITIES = (
    MechanismFlag.SIGN | MechanismFlag.VERIFY | MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT
)
_EC_CAPABILITIES = MechanismFlag.SIGN | MechanismFlag.VERIFY
# Capabilities above set SIGN/DECRYPT and clear WRAP/UNWRAP/DERIVE; these pin the rest.
_PRIVATE_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
}
_PUBLIC_TEMPLATE = {Attribute.TOKEN: True, Attribute.PRIVATE: False}


def _generate(
    token: Pkcs11Token,
    session: pkcs11.Session,
    ref: Pkcs11KeyRef,
    bits_or_curve: int | ec.EllipticCurve,
) -> Pkcs11PrivateKey:
    """RSA for a modulus size, EC for a curve."""
    if isinstance(bits_or_curve, int):
        public, _ = session.generate_keypair(
            KeyType.RSA,
            bits_or_curve,
            store=True,
            label=ref.label,
            id=ref.id,
            capabilities=_RSA_CAPABILITIES,
            public_template=_PUBLIC_TEMPLATE,
            private_template=_PRIVATE_TEMPLATE,
        )
        return Pkcs11RsaPrivateKey(token, ref, _rsa_from(public))
    parameters = session.create_domain_parameters(
        KeyType.EC,
        {Attribute.EC_PARAMS: encode_named_curve_parameters(bits_or_curve.name)},
        local=True,
    )
    public, _ = parameters.generate_keypair(
        store=True,
        label=ref.label,
        id=ref.id,
        capabilities=_EC_CAPABILITIES,
        public_template=_PUBLIC_TEMPLATE,
        private_template=_PRIVATE_TEMPLATE,
    )
    return Pkcs11EcPrivateKey(token, ref, _ec_from(public))


@contextlib.contextmanager
def _wrapped_errors(what: str) -> Iterator[None]:
    """python-pkcs11 errors become HsmError; session loss passes for the reconnect."""
    try:
        yield
    except SESSION_LOST_ERRORS:
        raise
    except p11e.PKCS11Error as exc:
        raise HsmError(f"{what} failed: {type(exc).__name__}") from exc


def key_matches_certificate(
    key: SigningKey, certificate: x509.Certificate, *, prove: bool = True
) -> bool:
    """Whether ``key`` is the private key for ``certificate``.

    Compares the public keys, then (``prove=True``) signs a random challenge and
    verifies it with the certificate's key: a token whose public key object was
    paired with the wrong private key would pass the first check alone. Token
    errors (:class:`HsmError`) propagate; they are not a mismatch.
    """
    certificate_key = certificate.public_key()
    if key.public_key() != certificate_key:
        return False
    if not prove:
        return True
    challenge = os.urandom(32)
    try:
        if isinstance(key, rsa.RSAPrivateKey) and isinstance(certificate_key, rsa.RSAPublicKey):
            signature = key.sign(challenge, padding.PKCS1v15(), hashes.SHA256())
            certificate_key.verify(signature, challenge, padding.PKCS1v15(), hashes.SHA256())
            return True
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(
            certificate_key, ec.EllipticCurvePublicKey
        ):
            signature = key.sign(challenge, ec.ECDSA(hashes.SHA256()))
            certificate_key.verify(signature, challenge, ec.ECDSA(hashes.SHA256()))
            return True
    except InvalidSignature:
        return False
    return False


def _public_object(session: pkcs11.Session, private: pkcs11.Key) -> pkcs11.Key | None:
    """The public key object paired with ``private``: same CKA_ID, else same label."""
    key_id = private[Attribute.ID] or None
    label = private[Attribute.LABEL] or None
    for criteria in ({"id": key_id}, {"label": label}) if key_id else ({"label": label},):
        if not any(criteria.values()):
            continue
        try:
            return session.get_key(object_class=ObjectClass.PUBLIC_KEY, **criteria)
        except (p11e.NoSuchKey, p11e.MultipleObjectsReturned):
            continue
    return None


def _rsa_public(session: pkcs11.Session, private: pkcs11.Key) -> rsa.RSAPublicKey:
    public = _public_object(session, private)
    # PKCS#11 RSA private key objects carry the modulus and public exponent too.
    return _rsa_from(public if public is not None else private)


def _rsa_from(key: pkcs11.Key) -> rsa.RSAPublicKey:
    modulus = int.from_bytes(key[Attribute.MODULUS], "big")
    exponent = int.from_bytes(key[Attribute.PUBLIC_EXPONENT], "big")
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def _ec_public(session: pkcs11.Session, private: pkcs11.Key) -> ec.EllipticCurvePublicKey:
    public = _public_object(session, private)
    if public is None:
        raise KeyNotFound(f"no public key object for EC key {private.label!r}; cannot read it")
    return _ec_from(public)


def _ec_from(key: pkcs11.Key) -> ec.EllipticCurvePublicKey:
    curve = _curve_from_params(bytes(key[Attribute.EC_PARAMS]))
    point = decode_ec_point(bytes(key[Attribute.EC_POINT]), curve)
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)


def _curve_from_params(params: bytes) -> ec.EllipticCurve:
    domain = asn1_keys.ECDomainParameters.load(params)
    if domain.name != "named":
        raise UnsupportedAlgorithm("only named-curve EC keys are supported")
    try:
        return ec.get_curve_for_oid(x509.ObjectIdentifier(domain.chosen.dotted))()
    except LookupError as exc:
        raise UnsupportedAlgorithm(f"EC curve {domain.chosen.dotted} is not supported") from exc


def decode_ec_point(value: bytes, curve: ec.EllipticCurve) -> bytes:
    """CKA_EC_POINT: DER OCTET STRING (PKCS#11 spec, SoftHSM) or the raw point
    (``docs/specs/hsm-and-cms.md``, "EC public points").

    The two cannot be confused: a raw point is 1+n or 1+2n bytes for an n-byte
    field, and wrapping adds 2 or 3 bytes, which no supported curve size matches.
    """
    size = (curve.key_size + 7) // 8
    if (len(value) == 1 + 2 * size and value[:1] == b"\x04") or (
        len(value) == 1 + size and value[:1] in (b"\x02", b"\x03")
    ):
        return value
    try:
        return bytes(core.OctetString.load(value, strict=True).native)
    except ValueError as exc:
        raise HsmError(f"unreadable CKA_EC_POINT ({len(value)} bytes)") from exc
