"""cryptography private-key ABCs whose private operations run in a PKCS#11 token.

cryptography's certificate, CRL and CSR builders check only ``isinstance``
against its abstract key classes and then call ``key.sign(...)``; the SCEP codec
calls ``key.sign``/``key.decrypt`` the same way. So these adapters make every
existing caller sign and decrypt inside the HSM, unchanged.

``sign``/``decrypt`` are synchronous (cryptography's API): they hand the call
to the token's worker thread and block the calling thread until it returns.
Code on an event loop must use ``await key.async_sign(...)``/``async_decrypt``,
or ``asyncio.to_thread(builder.sign, key, ...)``.

Hashing happens here, in Python: SoftHSM has no CKM_ECDSA_SHA256 (``docs/specs/hsm-and-cms.md``,
"ECDSA: hash in Python"), and
sending a digest instead of the message keeps network-HSM round trips small.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import pkcs11
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from pkcs11 import MGF, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e

from scepline_shared.keys.pkcs11_token import (
    SESSION_LOST_ERRORS,
    HsmError,
    KeyNotExtractable,
    KeyNotFound,
    Pkcs11KeyRef,
    Pkcs11Token,
)

__all__ = ["DIGEST_INFO_PREFIXES", "Pkcs11EcPrivateKey", "Pkcs11RsaPrivateKey", "find_key"]

#: DER DigestInfo up to the digest (RFC 8017 9.2 note 1): CKM_RSA_PKCS signs it as is.
DIGEST_INFO_PREFIXES: dict[str, bytes] = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
# CKM_RSA_PKCS_PSS / CKM_RSA_PKCS_OAEP parameters: (hashAlg, MGF) per hash name.
_HASH_PARAMS: dict[str, tuple[Mechanism, MGF]] = {
    "sha1": (Mechanism.SHA_1, MGF.SHA1),
    "sha224": (Mechanism.SHA224, MGF.SHA224),
    "sha256": (Mechanism.SHA256, MGF.SHA256),
    "sha384": (Mechanism.SHA384, MGF.SHA384),
    "sha512": (Mechanism.SHA512, MGF.SHA512),
}
# Unsupported by the token for these parameters: an algorithm question, not the input's.
_MECHANISM_ERRORS = (p11e.MechanismInvalid, p11e.MechanismParamInvalid)

_Operation = Callable[[pkcs11.Session], bytes]


def find_key(
    token: Pkcs11Token, session: pkcs11.Session, object_class: ObjectClass, ref: Pkcs11KeyRef
) -> Any:
    """The one key object of ``object_class`` matching ``ref`` (cached per session)."""

    def lookup() -> pkcs11.Object:
        try:
            return session.get_key(object_class=object_class, label=ref.label, id=ref.id)
        except p11e.NoSuchKey as exc:
            raise KeyNotFound(f"no {object_class.name} with {ref} on {token.label!r}") from exc
        except p11e.MultipleObjectsReturned as exc:
            raise KeyNotFound(
                f"several {object_class.name} objects match {ref} on {token.label!r}"
            ) from exc

    return token.cached_object(session, (object_class, ref.label, ref.id), lookup)


class _TokenKey:
    """What both adapters share: the token, where the key is, and error mapping."""

    _token: Pkcs11Token
    _ref: Pkcs11KeyRef

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._ref}, token={self._token.label!r})"

    @property
    def token(self) -> Pkcs11Token:
        return self._token

    @property
    def ref(self) -> Pkcs11KeyRef:
        return self._ref

    def _signing(self, mechanism: Mechanism, payload: bytes, param: Any = None) -> _Operation:
        def operation(session: pkcs11.Session) -> bytes:
            try:
                key = find_key(self._token, session, ObjectClass.PRIVATE_KEY, self._ref)
                return bytes(key.sign(payload, mechanism=mechanism, mechanism_param=param))
            except SESSION_LOST_ERRORS:
                raise  # the token reconnects and retries
            except _MECHANISM_ERRORS as exc:
                raise _unsupported(f"{mechanism.name} with these parameters") from exc
            except p11e.PKCS11Error as exc:
                raise HsmError(f"signing with {self!r} failed: {type(exc).__name__}") from exc

        return operation

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> NoReturn:
        raise KeyNotExtractable(f"{self!r} is held by the HSM and cannot be exported")

    def private_numbers(self) -> NoReturn:
        raise KeyNotExtractable(f"{self!r} is held by the HSM and cannot be exported")

    # A handle to a token object: copies are the same key.
    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Any:
        return self


class Pkcs11RsaPrivateKey(_TokenKey, rsa.RSAPrivateKey):
    """An RSA private key in the token: sign (PKCS#1 v1.5, PSS) and decrypt."""

    def __init__(self, token: Pkcs11Token, ref: Pkcs11KeyRef, public: rsa.RSAPublicKey) -> None:
        self._token = token
        self._ref = ref
        self._public = public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def sign(
        self,
        data: bytes,
        padding: asym_padding.AsymmetricPadding,
        algorithm: Prehashed | hashes.HashAlgorithm,
    ) -> bytes:
        """Blocks the calling thread for the HSM round trip (see the module doc)."""
        return self._token.run(self._sign_operation(data, padding, algorithm))

    async def async_sign(
        self,
        data: bytes,
        padding: asym_padding.AsymmetricPadding,
        algorithm: Prehashed | hashes.HashAlgorithm,
    ) -> bytes:
        return await self._token.run_async(self._sign_operation(data, padding, algorithm))

    def decrypt(self, ciphertext: bytes, padding: asym_padding.AsymmetricPadding) -> bytes:
        """Any failure that may depend on the ciphertext is a bare ``ValueError``.

        SoftHSM reports bad PKCS#1 padding as CKR_GENERAL_ERROR (``docs/specs/hsm-and-cms.md``,
        "Decryption failures must all look alike"); letting
        that type escape would be a Bleichenbacher oracle for callers that branch on
        it (RFC 3218). A token that stays unreachable raises
        :class:`~scepline_shared.keys.pkcs11_token.TokenUnavailable` instead:
        that does not depend on the input and must not look like a client error.
        """
        return self._token.run(self._decrypt_operation(ciphertext, padding))

    async def async_decrypt(
        self, ciphertext: bytes, padding: asym_padding.AsymmetricPadding
    ) -> bytes:
        return await self._token.run_async(self._decrypt_operation(ciphertext, padding))

    def _sign_operation(
        self,
        data: bytes,
        padding: asym_padding.AsymmetricPadding,
        algorithm: Prehashed | hashes.HashAlgorithm,
    ) -> _Operation:
        hash_algorithm, digest = _digest(data, algorithm)
        if isinstance(padding, asym_padding.PSS):
            hash_mechanism, _ = _hash_params(hash_algorithm)
            mgf = _mgf_params(padding.mgf)
            salt = _pss_salt_length(padding, self.key_size, hash_algorithm.digest_size)
            return self._signing(Mechanism.RSA_PKCS_PSS, digest, (hash_mechanism, mgf, salt))
        if isinstance(padding, asym_padding.PKCS1v15):
            prefix = DIGEST_INFO_PREFIXES.get(hash_algorithm.name)
            if prefix is None:
                raise _unsupported(f"RSA PKCS#1 v1.5 with {hash_algorithm.name}")
            return self._signing(Mechanism.RSA_PKCS, prefix + digest)
        raise _unsupported(f"RSA signature padding {padding.name}")

    def _decrypt_operation(
        self, ciphertext: bytes, padding: asym_padding.AsymmetricPadding
    ) -> _Operation:
        mechanism: Mechanism
        param: Any = None
        if isinstance(padding, asym_padding.PKCS1v15):
            mechanism = Mechanism.RSA_PKCS
        elif isinstance(padding, asym_padding.OAEP):
            mechanism = Mechanism.RSA_PKCS_OAEP
            hash_mechanism, _ = _hash_params(padding.algorithm)
            # CK_RSA_PKCS_OAEP_PARAMS: hashAlg, mgf, source data (the label).
            # cryptography has no public accessor for the OAEP label.
            param = (hash_mechanism, _mgf_params(padding.mgf), padding._label or None)
        else:
            raise _unsupported(f"RSA decryption padding {padding.name}")
        data = bytes(ciphertext)

        def operation(session: pkcs11.Session) -> bytes:
            try:
                key = find_key(self._token, session, ObjectClass.PRIVATE_KEY, self._ref)
                return bytes(key.decrypt(data, mechanism=mechanism, mechanism_param=param))
            except SESSION_LOST_ERRORS:
                raise
            except _MECHANISM_ERRORS as exc:
                raise _unsupported(f"{mechanism.name} with these parameters") from exc
            except p11e.PKCS11Error:
                # `from None`: not even the chained cause may tell failures apart.
                raise ValueError("Decryption failed") from None

        return operation


class Pkcs11EcPrivateKey(_TokenKey, ec.EllipticCurvePrivateKey):
    """An EC private key in the token: ECDSA signatures (CKM_ECDSA over our digest)."""

    def __init__(
        self, token: Pkcs11Token, ref: Pkcs11KeyRef, public: ec.EllipticCurvePublicKey
    ) -> None:
        self._token = token
        self._ref = ref
        self._public = public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        """Blocks the calling thread for the HSM round trip (see the module doc)."""
        return self._token.run(self._sign_operation(data, signature_algorithm))

    async def async_sign(
        self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm
    ) -> bytes:
        return await self._token.run_async(self._sign_operation(data, signature_algorithm))

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise _unsupported("ECDH with an HSM-held key")

    def _sign_operation(
        self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm
    ) -> _Operation:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise _unsupported(f"EC signature algorithm {type(signature_algorithm).__name__}")
        if signature_algorithm.deterministic_signing:
            # The HSM picks the nonce (docs/specs/hsm-and-cms.md, "The HSM picks the ECDSA nonce");
            # refuse rather than ignore a request.
            raise _unsupported("deterministic ECDSA (RFC 6979) with an HSM-held key")
        _, digest = _digest(data, signature_algorithm.algorithm)
        size = (self.key_size + 7) // 8
        # ECDSA uses the leftmost order-size bits of the hash; some HSMs refuse
        # longer input instead of truncating. Byte truncation is exact for
        # P-256/P-384 and never needed for P-521.
        signing = self._signing(Mechanism.ECDSA, digest[:size])

        def operation(session: pkcs11.Session) -> bytes:
            raw = signing(session)  # r || s, each `size` bytes (PKCS#11 2.3.1)
            if len(raw) != 2 * size:
                raise HsmError(f"ECDSA signature of {len(raw)} bytes from {self!r}")
            r = int.from_bytes(raw[:size], "big")
            s = int.from_bytes(raw[size:], "big")
            return encode_dss_signature(r, s)

        return operation


def _digest(
    data: bytes, algorithm: Prehashed | hashes.HashAlgorithm
) -> tuple[hashes.HashAlgorithm, bytes]:
    if isinstance(algorithm, Prehashed):
        hash_algorithm: hashes.HashAlgorithm = algorithm._algorithm
        digest = bytes(data)
        if len(digest) != hash_algorithm.digest_size:
            raise ValueError(
                f"prehashed data is {len(digest)} bytes, {hash_algorithm.name} needs "
                f"{hash_algorithm.digest_size}"
            )
        return hash_algorithm, digest
    if not isinstance(algorithm, hashes.HashAlgorithm):
        raise TypeError("algorithm must be a HashAlgorithm or Prehashed")
    context = hashes.Hash(algorithm)
    context.update(bytes(data))
    return algorithm, context.finalize()


def _hash_params(algorithm: hashes.HashAlgorithm) -> tuple[Mechanism, MGF]:
    params = _HASH_PARAMS.get(algorithm.name)
    if params is None:
        raise _unsupported(f"hash {algorithm.name} in PKCS#11 RSA parameters")
    return params


def _mgf_params(mgf: asym_padding.MGF) -> MGF:
    if not isinstance(mgf, asym_padding.MGF1):
        raise _unsupported(f"mask generation {type(mgf).__name__}")
    return _hash_params(mgf._algorithm)[1]


def _pss_salt_length(padding: asym_padding.PSS, key_size: int, digest_size: int) -> int:
    salt = padding._salt_length
    if salt is asym_padding.PSS.DIGEST_LENGTH:
        return digest_size
    if salt is asym_padding.PSS.MAX_LENGTH:
        # RFC 8017 9.1.1: emLen = ceil((modBits - 1) / 8), sLen <= emLen - hLen - 2.
        return (key_size - 1 + 7) // 8 - digest_size - 2
    if isinstance(salt, int) and not isinstance(salt, bool):
        if salt < 0:
            raise ValueError("PSS salt length must be >= 0")
        return salt
    # PSS.AUTO only makes sense when verifying.
    raise ValueError("PSS salt length must be an int, DIGEST_LENGTH or MAX_LENGTH when signing")


def _unsupported(what: str) -> UnsupportedAlgorithm:
    return UnsupportedAlgorithm(f"{what} is not supported by this PKCS#11 token/adapter")
