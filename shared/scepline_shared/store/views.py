"""Immutable values the repository hands out and takes in.

ORM objects and sessions never leave the repository: callers get these frozen
snapshots, which stay valid after the transaction that produced them ended.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime

from scepline_shared.serials import serial_hex
from scepline_shared.store.models import (
    DEFAULT_ENDPOINT,
    TERMINAL_STATES,
    Approval,
    JournalKind,
    NotifyState,
    RequestState,
)

__all__ = [
    "CertificateStatusView",
    "CertificateView",
    "CrlView",
    "EventView",
    "IssuedCertificateRecord",
    "JournalEntry",
    "OneTimeChallengeView",
    "RecordResult",
    "RefusalView",
    "RequestView",
    "SignatureClaim",
    "client_transaction_id",
    "request_key",
    "serial_hex",
    "spki_key_id",
]

_SERIAL = re.compile(r"[1-9a-f][0-9a-f]{0,63}")


def spki_key_id(spki_der: bytes) -> str:
    """The `signer_key_id` of a key: hex SHA-256 of its SubjectPublicKeyInfo DER."""
    return hashlib.sha256(spki_der).hexdigest()


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


@dataclass(frozen=True, slots=True)
class RequestView:
    """A snapshot of one `scep_request` row."""

    id: int
    transaction_id: str
    signer_key_id: str
    message_type: int
    csr_der: bytes = field(repr=False)
    signer_cert_der: bytes = field(repr=False)
    subject: str
    renewal_of_serial: str | None
    state: RequestState
    notify_state: NotifyState
    fail_info: int | None
    fail_reason: str | None
    provider_code: str | None
    cert_serial: str | None
    cert_der: bytes | None = field(repr=False)
    attempts: int
    version: int
    created_at: datetime
    updated_at: datetime
    queued_at: datetime | None
    parked_at: datetime | None = None
    approval: Approval | None = None
    endpoint: str = DEFAULT_ENDPOINT

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def scep_transaction_id(self) -> str:
        """The client's transactionID (``transaction_id`` is the store's request
        key, which carries suffixes for a renewal and for an endpoint other than
        the default one; see :func:`request_key`)."""
        return client_transaction_id(
            self.transaction_id, renewal_of=self.renewal_of_serial, endpoint=self.endpoint
        )


def request_key(transaction_id: str, renewal_of: str | None, endpoint: str) -> str:
    """How the store names a request: the client's transactionID, then
    ``|renew:<serial>`` when it is signed with our certificate of that serial,
    then ``|at:<endpoint>`` at an endpoint other than the default one.

    RFC 8894 clients derive the transactionID from the public key, so renewing
    with the same key repeats the transactionID of the first enrolment, and one
    key enrolling at two endpoints sends one transactionID to both. Each is its
    own request; a retransmission or a poll (signed like its request, sent to
    the same endpoint) maps to the same name again.
    """
    key = transaction_id if renewal_of is None else f"{transaction_id}|renew:{renewal_of}"
    return key if endpoint == DEFAULT_ENDPOINT else f"{key}|at:{endpoint}"


def client_transaction_id(key: str, *, renewal_of: str | None, endpoint: str) -> str:
    """The client's transactionID in a request key (:func:`request_key` undone)."""
    at = f"|at:{endpoint}"
    if endpoint != DEFAULT_ENDPOINT and key.endswith(at):
        key = key[: -len(at)]
    renew = f"|renew:{renewal_of}"
    if renewal_of and key.endswith(renew):
        key = key[: -len(renew)]
    return key


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What `record_request` did: `created` is False for a transaction id seen before."""

    request: RequestView
    created: bool


@dataclass(frozen=True, slots=True)
class EventView:
    """One history entry. `kind` is "state" or "notify"; `from_state` is None on creation."""

    at: datetime
    kind: str
    from_state: str | None
    to_state: str
    detail: str


@dataclass(frozen=True, slots=True)
class RefusalView:
    """A request ingress refused before recording it (see models.Refusal)."""

    at: datetime
    transaction_id: str
    message_type: int | None
    fail_info: int
    reason: str


@dataclass(frozen=True, slots=True)
class IssuedCertificateRecord:
    """A freshly signed certificate, as the signer hands it to `record_signed`."""

    serial: str
    issuer: str
    subject: str
    not_before: datetime
    not_after: datetime
    der: bytes = field(repr=False)
    issuer_key_id: str | None = None
    renews_serial: str | None = None

    def __post_init__(self) -> None:
        # The serial is the primary key, so one spelling only; see `serial_hex`.
        if not _SERIAL.fullmatch(self.serial):
            raise ValueError(
                f"serial {self.serial!r} is not lowercase hex without leading zeros; "
                "use serial_hex()"
            )
        _require_aware("not_before", self.not_before)
        _require_aware("not_after", self.not_after)
        if not self.der:
            raise ValueError("certificate DER is empty")


@dataclass(frozen=True, slots=True)
class SignatureClaim:
    """What a signer is about to have a CA key sign: the issuance journal's entry,
    written with the claim on the request before the key is used."""

    serial: str
    issuer_key_id: str
    issuer: str
    subject: str
    not_before: datetime
    not_after: datetime
    tbs_sha256: str

    def __post_init__(self) -> None:
        if not _SERIAL.fullmatch(self.serial):
            raise ValueError(f"serial {self.serial!r} is not canonical; use serial_hex()")
        _require_aware("not_before", self.not_before)
        _require_aware("not_after", self.not_after)


@dataclass(frozen=True, slots=True)
class CertificateView:
    """A snapshot of one `certificate` row."""

    serial: str
    transaction_id: str
    issuer: str
    subject: str
    not_before: datetime
    not_after: datetime
    # None for a voided serial: claimed, never stored, revoked (see models).
    der: bytes | None = field(repr=False)
    revoked_at: datetime | None
    revocation_reason: int | None
    issuer_key_id: str | None = None
    renews_serial: str | None = None
    endpoint: str = DEFAULT_ENDPOINT

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_voided(self) -> bool:
        return self.der is None


@dataclass(frozen=True, slots=True)
class CertificateStatusView:
    """What an OCSP answer needs of one `certificate` row (the DER and names of
    a full CertificateView cost more to read than the answer to sign)."""

    serial: str
    issuer: str
    issuer_key_id: str | None
    not_before: datetime
    revoked_at: datetime | None
    revocation_reason: int | None
    voided: bool  # claimed, never stored (see models): always revoked


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One signature of a CA key, as the issuance journal recorded it before signing."""

    id: int
    at: datetime
    kind: JournalKind
    issuer_key_id: str
    issuer: str
    serial: str
    tbs_sha256: str
    subject: str
    not_before: datetime
    not_after: datetime
    transaction_id: str | None


@dataclass(frozen=True, slots=True)
class OneTimeChallengeView:
    """A one-time challenge as stored: its hash, never the challenge."""

    id: int
    challenge_sha256: str
    endpoint: str
    created_at: datetime
    expires_at: datetime
    created_by: str
    bound_subject: str | None
    bound_sans: str | None
    used_at: datetime | None
    used_by: str | None

    @property
    def sans(self) -> tuple[str, ...]:
        """The SANs it is bound to (``dns:host.example.com``...), if any."""
        return tuple(line for line in (self.bound_sans or "").splitlines() if line)


@dataclass(frozen=True, slots=True)
class CrlView:
    """A snapshot of one `crl` row."""

    number: int
    issuer_key_id: str
    this_update: datetime
    next_update: datetime
    der: bytes = field(repr=False)
