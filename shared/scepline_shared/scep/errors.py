"""One error tree for the SCEP protocol.

Every protocol failure is a ``ScepError``. Subclasses that a CertRep can carry
declare their RFC 8894 ``fail_info``; ``MalformedMessage`` has none, because a
message we cannot read has no transactionID or nonce to answer to (HTTP 400).
``failure_message`` is safe to show to the client and to log: it never holds a
challenge, key material or a secret.

When the failure is found after the message header was read (for example a
signature that does not verify), the codec attaches that header so the caller
can still address a CertRep FAILURE to the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Self

from .types import FailInfo

if TYPE_CHECKING:
    from .message import MessageHeader

__all__ = [
    "BadAlg",
    "BadCertId",
    "BadMessageCheck",
    "BadRequest",
    "BadTime",
    "DisallowedAlgorithm",
    "KeyUnavailable",
    "MalformedMessage",
    "ScepError",
]


class KeyUnavailable(Exception):
    """The key that must decrypt or sign cannot be used now (its token is
    unreachable or refuses the session): not the message's fault. Raised by key
    backends (the PKCS#11 adapters' HsmError is one); the codec lets it through
    instead of answering a FAILURE, so the client retries."""


class ScepError(Exception):
    fail_info: ClassVar[FailInfo | None] = None

    def __init__(self, failure_message: str) -> None:
        super().__init__(failure_message)
        self.failure_message = failure_message
        self.header: MessageHeader | None = None

    def with_header(self, header: MessageHeader) -> Self:
        self.header = header
        return self


class MalformedMessage(ScepError):
    """Not a SCEP pkiMessage at all: no CertRep can be addressed to it."""


class BadAlg(ScepError):
    fail_info = FailInfo.BAD_ALG


class DisallowedAlgorithm(BadAlg):
    """A known algorithm that this deployment refuses (e.g. single DES)."""

    def __init__(self, failure_message: str, *, algorithm: str) -> None:
        super().__init__(failure_message)
        self.algorithm = algorithm


class BadMessageCheck(ScepError):
    fail_info = FailInfo.BAD_MESSAGE_CHECK


class BadRequest(ScepError):
    fail_info = FailInfo.BAD_REQUEST


class BadTime(ScepError):
    fail_info = FailInfo.BAD_TIME


class BadCertId(ScepError):
    fail_info = FailInfo.BAD_CERT_ID
