"""SCEP vocabulary: message types, statuses, failInfo and algorithms (RFC 8894)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes

__all__ = [
    "ContentEncryption",
    "Digest",
    "FailInfo",
    "MessageType",
    "PkiStatus",
    "TransactionId",
]


class MessageType(enum.IntEnum):
    """messageType attribute values (RFC 8894 §3.2.1.2)."""

    CERT_REP = 3
    RENEWAL_REQ = 17
    PKCS_REQ = 19
    CERT_POLL = 20  # formerly GetCertInitial
    GET_CERT = 21
    GET_CRL = 22

    @property
    def is_enrolment(self) -> bool:
        return self in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ)


class PkiStatus(enum.IntEnum):
    SUCCESS = 0
    FAILURE = 2
    PENDING = 3


class FailInfo(enum.IntEnum):
    """failInfo values (RFC 8894 §3.2.1.4.5)."""

    BAD_ALG = 0
    BAD_MESSAGE_CHECK = 1
    BAD_REQUEST = 2
    BAD_TIME = 3
    BAD_CERT_ID = 4

    @property
    def rfc_name(self) -> str:
        return {
            FailInfo.BAD_ALG: "badAlg",
            FailInfo.BAD_MESSAGE_CHECK: "badMessageCheck",
            FailInfo.BAD_REQUEST: "badRequest",
            FailInfo.BAD_TIME: "badTime",
            FailInfo.BAD_CERT_ID: "badCertId",
        }[self]


TransactionId = str


@dataclass(frozen=True)
class _DigestInfo:
    asn1_name: str  # asn1crypto DigestAlgorithmId name
    hash_type: type[hashes.HashAlgorithm]
    caps_keyword: str


class Digest(enum.Enum):
    """Message digests a SCEP client may use for its signature."""

    SHA1 = _DigestInfo("sha1", hashes.SHA1, "SHA-1")
    SHA224 = _DigestInfo("sha224", hashes.SHA224, "SHA-224")
    SHA256 = _DigestInfo("sha256", hashes.SHA256, "SHA-256")
    SHA384 = _DigestInfo("sha384", hashes.SHA384, "SHA-384")
    SHA512 = _DigestInfo("sha512", hashes.SHA512, "SHA-512")

    @property
    def asn1_name(self) -> str:
        return self.value.asn1_name

    def hash_algorithm(self) -> hashes.HashAlgorithm:
        return self.value.hash_type()

    @classmethod
    def from_asn1_name(cls, name: str) -> Digest | None:
        return next((d for d in cls if d.value.asn1_name == name), None)


@dataclass(frozen=True)
class _CipherInfo:
    asn1_name: str  # asn1crypto EncryptionAlgorithmId name
    key_size: int  # bytes
    block_size: int  # bytes


class ContentEncryption(enum.Enum):
    """CMS content-encryption algorithms for the pkcsPKIEnvelope."""

    AES128_CBC = _CipherInfo("aes128_cbc", 16, 16)
    AES192_CBC = _CipherInfo("aes192_cbc", 24, 16)
    AES256_CBC = _CipherInfo("aes256_cbc", 32, 16)
    DES3_CBC = _CipherInfo("tripledes_3key", 24, 8)
    # Forbidden by RFC 8894 (§2.9), still sent by old clients; opt-in only.
    DES_CBC = _CipherInfo("des", 8, 8)

    @property
    def asn1_name(self) -> str:
        return self.value.asn1_name

    @property
    def key_size(self) -> int:
        return self.value.key_size

    @property
    def block_size(self) -> int:
        return self.value.block_size

    @classmethod
    def from_asn1_name(cls, name: str) -> ContentEncryption | None:
        return next((c for c in cls if c.value.asn1_name == name), None)
