"""CMS EnvelopedData for the pkcsPKIEnvelope (RFC 8894 §3.2.2, RFC 5652 §6).

Key transport is RSA (PKCS#1 v1.5, or OAEP when a client sends it). Content
encryption is AES-CBC, 3DES-CBC or, only when the caller allows it, single DES.
The recipient key is any cryptography ``RSAPrivateKey`` (a file key or an HSM
key behind the same ABC). A server may hold several RA keys at once (during a
CA rollover: the active, previous and staged RA); the envelope's RecipientInfo
(issuerAndSerialNumber or subjectKeyIdentifier) names the one to use.

Decryption follows RFC 3218: whatever goes wrong while unwrapping the content
key, we continue with a random key, so the client only ever learns one generic
"could not decrypt" outcome (no Bleichenbacher padding oracle). That includes
the raw errors a token key may raise for bad padding (SoftHSM reports it as
CKR_GENERAL_ERROR); only an unreachable token propagates, because that does not
depend on the ciphertext and the client should retry rather than be refused.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from asn1crypto import algos, cms, core, parser
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP, PKCS1v15
from cryptography.hazmat.primitives.ciphers import Cipher, CipherAlgorithm, algorithms, modes

from . import asn1
from .errors import BadAlg, BadMessageCheck, BadRequest, DisallowedAlgorithm, KeyUnavailable
from .types import ContentEncryption

__all__ = [
    "Decrypted",
    "Recipient",
    "decrypt_enveloped_data",
    "encrypt_enveloped_data",
    "open_enveloped_data",
    "recipients_from",
]

#: A key that can decrypt and the certificate clients encrypt to.
Recipient = tuple[rsa.RSAPrivateKey, x509.Certificate]


@dataclass(frozen=True)
class Decrypted:
    plaintext: bytes
    encryption: ContentEncryption  # the client's algorithm: answer with the same
    recipient_key: rsa.RSAPrivateKey  # the candidate the RecipientInfo named
    recipient: x509.Certificate


def recipients_from(
    recipients: Sequence[Recipient] | None,
    recipient_key: rsa.RSAPrivateKey | None,
    recipient: x509.Certificate | None,
) -> tuple[Recipient, ...]:
    """The candidates from either calling form: ``recipients=`` or the single pair."""
    if recipients is not None:
        if recipient_key is not None or recipient is not None:
            raise TypeError("pass either recipients or recipient_key/recipient, not both")
        candidates = tuple(recipients)
    elif recipient_key is not None and recipient is not None:
        candidates = ((recipient_key, recipient),)
    else:
        raise TypeError("a recipient is needed: recipients= or recipient_key= and recipient=")
    if not candidates:
        raise TypeError("recipients is empty")
    return candidates


def encrypt_enveloped_data(
    content: bytes, *, recipient: x509.Certificate, encryption: ContentEncryption
) -> bytes:
    """Encrypt ``content`` to ``recipient``'s RSA key; return a ContentInfo DER."""
    public_key = recipient.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise BadAlg("the recipient key is not RSA; SCEP key transport needs RSA")
    key = os.urandom(encryption.key_size)
    iv = os.urandom(encryption.block_size)
    padder = padding.PKCS7(encryption.block_size * 8).padder()
    padded = padder.update(content) + padder.finalize()
    encryptor = Cipher(_cipher(encryption, key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()

    # Each level is built once, from children that already hold their encoding
    # (see asn1): asn1crypto 1.5.1 re-encodes nested built values again and again.
    key_transport = cms.KeyTransRecipientInfo(
        {
            "version": "v0",
            "rid": cms.RecipientIdentifier(
                name="issuer_and_serial_number",
                value=asn1.issuer_and_serial(
                    recipient.issuer.public_bytes(), recipient.serial_number
                ),
            ),
            "key_encryption_algorithm": asn1.constant(
                cms.KeyEncryptionAlgorithm, algorithm="rsaes_pkcs1v15"
            ),
            "encrypted_key": public_key.encrypt(key, PKCS1v15()),
        }
    )
    recipient_info = cms.RecipientInfo(name="ktri", value=asn1.frozen(key_transport))
    content_encryption = cms.EncryptionAlgorithm(
        {"algorithm": encryption.asn1_name, "parameters": core.OctetString(iv)}
    )
    encrypted_content_info = cms.EncryptedContentInfo(
        {
            "content_type": "data",
            "content_encryption_algorithm": asn1.frozen(content_encryption),
            "encrypted_content": ciphertext,
        }
    )
    enveloped = cms.EnvelopedData(
        {
            "version": "v0",
            "recipient_infos": asn1.frozen(cms.RecipientInfos([recipient_info])),
            "encrypted_content_info": asn1.frozen(encrypted_content_info),
        }
    )
    return asn1.content_info("enveloped_data", enveloped)


def decrypt_enveloped_data(
    der: bytes,
    *,
    recipients: Sequence[Recipient] | None = None,
    recipient_key: rsa.RSAPrivateKey | None = None,
    recipient: x509.Certificate | None = None,
    allowed: Collection[ContentEncryption],
) -> tuple[bytes, ContentEncryption]:
    """Decrypt a pkcsPKIEnvelope addressed to ``recipient`` or one of ``recipients``.

    Returns the plaintext and the algorithm the client used (responses are
    encrypted with the same one). :func:`open_enveloped_data` also tells which
    recipient it was.
    """
    opened = open_enveloped_data(
        der, recipients=recipients_from(recipients, recipient_key, recipient), allowed=allowed
    )
    return opened.plaintext, opened.encryption


def open_enveloped_data(
    der: bytes, *, recipients: Sequence[Recipient], allowed: Collection[ContentEncryption]
) -> Decrypted:
    """Decrypt a pkcsPKIEnvelope with the candidate its RecipientInfo names.

    BadMessageCheck if it names none of them.
    """
    try:
        info = cms.ContentInfo.load(der)
        if info["content_type"].native != "enveloped_data":
            raise BadRequest("the pkcsPKIEnvelope is not CMS EnvelopedData")
        enveloped = info["content"]
        content_info = enveloped["encrypted_content_info"]
        algorithm = content_info["content_encryption_algorithm"]
        algorithm_name = algorithm["algorithm"].native
        recipient_infos = list(enveloped["recipient_infos"])
    except (ValueError, TypeError, KeyError) as exc:
        raise BadRequest("the pkcsPKIEnvelope is not valid CMS EnvelopedData") from exc

    encryption = ContentEncryption.from_asn1_name(algorithm_name)
    if encryption is None:
        raise BadAlg(f"unsupported content encryption {algorithm_name}")
    if encryption not in allowed:
        raise DisallowedAlgorithm(
            f"content encryption {algorithm_name} is not allowed", algorithm=algorithm_name
        )
    try:
        iv = algorithm.encryption_iv
    except (ValueError, TypeError) as exc:
        raise BadRequest("content encryption parameters are not a CBC IV") from exc
    if not isinstance(iv, bytes) or len(iv) != encryption.block_size:
        raise BadRequest("content encryption IV has the wrong length")

    try:
        ktri, (recipient_key, recipient) = _find_recipient(recipient_infos, recipients)
    except (ValueError, TypeError) as exc:  # a name RFC 4518 cannot prepare
        raise BadRequest("the envelope's recipient identifier is malformed") from exc
    key = _unwrap_content_key(ktri, recipient_key, encryption.key_size)
    ciphertext = _encrypted_content(content_info)
    if not ciphertext or len(ciphertext) % encryption.block_size:
        raise BadMessageCheck("could not decrypt the pkcsPKIEnvelope")
    decryptor = Cipher(_cipher(encryption, key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    try:
        unpadder = padding.PKCS7(encryption.block_size * 8).unpadder()
        plaintext = unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise BadMessageCheck("could not decrypt the pkcsPKIEnvelope") from exc
    return Decrypted(plaintext, encryption, recipient_key, recipient)


def _cipher(encryption: ContentEncryption, key: bytes) -> CipherAlgorithm:
    if encryption is ContentEncryption.DES_CBC:
        # Single DES is 3DES with three equal keys (cryptography dropped DES itself).
        return TripleDES(key * 3)
    if encryption is ContentEncryption.DES3_CBC:
        return TripleDES(key)
    return algorithms.AES(key)


def _find_recipient(
    recipient_infos: list[cms.RecipientInfo], recipients: Sequence[Recipient]
) -> tuple[cms.KeyTransRecipientInfo, Recipient]:
    """The first KeyTransRecipientInfo that names one of ``recipients``, and that one."""
    for info in recipient_infos:
        if info.name != "ktri":
            continue
        rid = info.chosen["rid"]
        if rid.name == "issuer_and_serial_number":
            value = rid.chosen
            serial = value["serial_number"].native
            for candidate in recipients:
                certificate = candidate[1]
                if certificate.serial_number == serial and asn1.names_equal(
                    certificate.issuer.public_bytes(), value["issuer"]
                ):
                    return info.chosen, candidate
        elif rid.name == "subject_key_identifier":
            wanted = rid.chosen.native
            for candidate in recipients:
                ski = _subject_key_identifier(candidate[1])
                if ski is not None and hmac.compare_digest(wanted, ski):
                    return info.chosen, candidate
    raise BadMessageCheck("the pkcsPKIEnvelope is not addressed to this CA's RA certificate")


def _subject_key_identifier(certificate: x509.Certificate) -> bytes | None:
    try:
        return certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest
    except x509.ExtensionNotFound:
        return None


def _unwrap_content_key(
    ktri: cms.KeyTransRecipientInfo, recipient_key: rsa.RSAPrivateKey, key_size: int
) -> bytes:
    random_key = os.urandom(key_size)
    try:
        algorithm = ktri["key_encryption_algorithm"]
        encrypted_key = ktri["encrypted_key"].native
        name = algorithm["algorithm"].native
        if name in ("rsaes_pkcs1v15", "rsa"):
            key = recipient_key.decrypt(encrypted_key, PKCS1v15())
        elif name == "rsaes_oaep":
            hash_name = algorithm["parameters"]["hash_algorithm"]["algorithm"].native
            hash_algorithm = _OAEP_HASHES[hash_name]()
            key = recipient_key.decrypt(
                encrypted_key,
                OAEP(mgf=MGF1(hash_algorithm), algorithm=hash_algorithm, label=None),
            )
        else:
            raise BadAlg(f"unsupported key transport {name}")
    except BadAlg:
        raise
    except UnsupportedAlgorithm as exc:
        # The key (a token) cannot do the OAEP parameters the client chose: that
        # depends on the public algorithm identifier only, not on the ciphertext.
        raise BadAlg("the RA key cannot unwrap the content key with these parameters") from exc
    except KeyUnavailable:
        # The token is unreachable or refuses us whatever the input: the request
        # is retried later instead of being answered badMessageCheck for good.
        raise
    except Exception:  # noqa: BLE001 - RFC 3218, see below
        # RFC 3218: every failure that may depend on the ciphertext looks the same:
        # ValueError from a file key, and whatever a token key raises for bad
        # padding (python-pkcs11's GeneralError on SoftHSM; docs/specs/hsm-and-cms.md,
        # "Decryption failures must all look alike").
        return random_key
    # A key of the wrong length is another unwrap failure, handled the same way.
    return key if len(key) == key_size else random_key


_OAEP_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def _encrypted_content(content_info: algos.Asn1Value) -> bytes:
    try:
        value = content_info["encrypted_content"].native
        return value if isinstance(value, bytes) else b""
    except ValueError:
        # Go's pkcs7 (micromdm scepclient) sends [0] as a *constructed* definite-length
        # OCTET STRING, which asn1crypto refuses; BER allows it, so read it by hand.
        return _constructed_octets(content_info.contents)


def _constructed_octets(sequence_contents: bytes) -> bytes:
    position = 0
    while position < len(sequence_contents):
        length = parser.peek(sequence_contents[position:])
        class_, method, tag, _header, body, _trailer = parser.parse(
            sequence_contents[position : position + length]
        )
        position += length
        if class_ == 2 and tag == 0:
            return body if method == 0 else _concatenate_segments(body)
    return b""


def _concatenate_segments(body: bytes) -> bytes:
    out = bytearray()
    position = 0
    while position < len(body):
        length = parser.peek(body[position:])
        _class, method, tag, _header, segment, _trailer = parser.parse(
            body[position : position + length]
        )
        position += length
        if tag != 4:
            raise BadRequest("encryptedContent holds something other than OCTET STRINGs")
        out += segment if method == 0 else _concatenate_segments(segment)
    return bytes(out)
