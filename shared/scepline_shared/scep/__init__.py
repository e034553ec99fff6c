"""The SCEP (RFC 8894) codec: a pure library, no HTTP, storage or settings.

Server path: ``read_pki_message`` → ``open_envelope`` → ``parse_message_data``
→ ``build_cert_rep``. Client path: ``build_request`` → ``read_cert_rep``.
"""

from .csr import CertificationRequest, load_certification_request, load_recorded_csr
from .errors import (
    BadAlg,
    BadCertId,
    BadMessageCheck,
    BadRequest,
    BadTime,
    DisallowedAlgorithm,
    KeyUnavailable,
    MalformedMessage,
    ScepError,
)
from .message import (
    CertRep,
    IssuerAndSerial,
    IssuerAndSubjectNames,
    MessageHeader,
    PkiMessage,
    build_cert_rep,
    build_request,
    issuer_and_serial,
    issuer_and_subject,
    open_envelope,
    parse_message_data,
    read_cert_rep,
    read_pki_message,
)
from .nextca import build_next_ca_response, read_next_ca_response
from .signed import build_degenerate, parse_degenerate
from .types import ContentEncryption, Digest, FailInfo, MessageType, PkiStatus

__all__ = [
    "BadAlg",
    "BadCertId",
    "BadMessageCheck",
    "BadRequest",
    "BadTime",
    "CertRep",
    "CertificationRequest",
    "ContentEncryption",
    "Digest",
    "DisallowedAlgorithm",
    "FailInfo",
    "IssuerAndSerial",
    "IssuerAndSubjectNames",
    "KeyUnavailable",
    "MalformedMessage",
    "MessageHeader",
    "MessageType",
    "PkiMessage",
    "PkiStatus",
    "ScepError",
    "build_cert_rep",
    "build_degenerate",
    "build_next_ca_response",
    "build_request",
    "issuer_and_serial",
    "issuer_and_subject",
    "load_certification_request",
    "load_recorded_csr",
    "open_envelope",
    "parse_degenerate",
    "parse_message_data",
    "read_cert_rep",
    "read_next_ca_response",
    "read_pki_message",
]
