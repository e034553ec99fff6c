"""SQLAlchemy models of the durable state store.

The store is the source of truth for every SCEP request: broker messages only
say "look at transaction X". Rows are changed through `RequestRepository`
with compare-and-set updates; nothing outside the repository should touch
these classes.

Any change here needs a new revision under `migrations/versions/`
(`tests/shared/store/test_migrations.py` checks they agree).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# The endpoint the SCEPLINE_* settings describe (scepline_shared.endpoints);
# every request and certificate from before endpoints existed is its.
DEFAULT_ENDPOINT = "default"

__all__ = [
    "ALLOWED_NOTIFY_TRANSITIONS",
    "ALLOWED_TRANSITIONS",
    "NON_TERMINAL_STATES",
    "TERMINAL_STATES",
    "AdminAction",
    "AdminRole",
    "AdminToken",
    "Approval",
    "Base",
    "Crl",
    "EnumString",
    "IntuneStatus",
    "IssuanceJournal",
    "IssuedCertificate",
    "JournalKind",
    "NotifyState",
    "OneTimeChallenge",
    "Refusal",
    "RequestEvent",
    "RequestState",
    "ScepRequest",
    "UtcDateTime",
]


class RequestState(StrEnum):
    """Where a request is in the pipeline."""

    RECEIVED = "RECEIVED"
    # The endpoint's provider is "manual": an operator approves (-> VALIDATED)
    # or rejects (-> FAILED) it; the device hears PENDING meanwhile.
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    VALIDATED = "VALIDATED"
    REJECTED = "REJECTED"
    # A signer claimed the request: its serial and to-be-signed hash are in the
    # issuance journal, and the CA key may be in use for it right now.
    SIGNING = "SIGNING"
    SIGNED = "SIGNED"
    ISSUED = "ISSUED"
    FAILED = "FAILED"


class Approval(StrEnum):
    """What vouched for a validated request, recorded with VALIDATED.

    Routing and issuance read it instead of guessing from the provider or the
    history: the signer issues names that need proof of identity (Intune's SID
    and UPN SANs) only for PROVIDER and RENEWAL, and a renewal's lineage goes
    into the certificate it leads to.
    """

    # A shared secret matched (static challenge): the requester belongs, its
    # names are its own claim.
    CHALLENGE = "challenge"
    # The provider checked the request's names itself (Intune's validateRequest).
    PROVIDER = "provider"
    # Signed with a valid certificate of ours and asking for no other identity.
    RENEWAL = "renewal"
    # An operator approved it (`scepline request approve`, "manual" endpoints):
    # someone looked at the request, but nobody checked its names as Intune does.
    OPERATOR = "operator"


class JournalKind(StrEnum):
    """What a signature of a CA key produced (`IssuanceJournal.kind`)."""

    CERTIFICATE = "certificate"
    CRL = "crl"
    # The CA's own certificates: a generation's CA certificate and its RA's.
    CA_CERTIFICATE = "ca-certificate"
    RA_CERTIFICATE = "ra-certificate"
    # A generation's delegated OCSP responder certificate (renewed every few days).
    OCSP_CERTIFICATE = "ocsp-certificate"


class AdminRole(StrEnum):
    """What a management API token may do: read everything, or act as well."""

    VIEWER = "viewer"
    OPERATOR = "operator"


class NotifyState(StrEnum):
    """Whether Intune has been told the outcome."""

    NONE = "NONE"
    SENT = "SENT"
    DEAD = "DEAD"
    NOT_REQUIRED = "NOT_REQUIRED"


TERMINAL_STATES: frozenset[RequestState] = frozenset(
    {RequestState.REJECTED, RequestState.ISSUED, RequestState.FAILED}
)
NON_TERMINAL_STATES: frozenset[RequestState] = frozenset(RequestState) - TERMINAL_STATES

ALLOWED_TRANSITIONS: Mapping[RequestState, frozenset[RequestState]] = {
    RequestState.RECEIVED: frozenset(
        {
            RequestState.AWAITING_APPROVAL,
            RequestState.VALIDATED,
            RequestState.REJECTED,
            RequestState.FAILED,
        }
    ),
    # An operator's approval, rejection, or no decision in time.
    RequestState.AWAITING_APPROVAL: frozenset({RequestState.VALIDATED, RequestState.FAILED}),
    RequestState.VALIDATED: frozenset({RequestState.SIGNING, RequestState.FAILED}),
    # Back to VALIDATED only when the claim is voided (its serial is revoked).
    RequestState.SIGNING: frozenset(
        {RequestState.SIGNED, RequestState.VALIDATED, RequestState.FAILED}
    ),
    RequestState.SIGNED: frozenset({RequestState.ISSUED, RequestState.FAILED}),
    RequestState.REJECTED: frozenset(),
    RequestState.ISSUED: frozenset(),
    RequestState.FAILED: frozenset(),
}

# DEAD -> SENT lets an operator replay a dead-lettered notification.
ALLOWED_NOTIFY_TRANSITIONS: Mapping[NotifyState, frozenset[NotifyState]] = {
    NotifyState.NONE: frozenset({NotifyState.SENT, NotifyState.DEAD, NotifyState.NOT_REQUIRED}),
    NotifyState.DEAD: frozenset({NotifyState.SENT}),
    NotifyState.SENT: frozenset(),
    NotifyState.NOT_REQUIRED: frozenset(),
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite has no timezone type, so values are stored as naive UTC there and
    given their tzinfo back on load; naive input is refused rather than guessed.
    """

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


_E = TypeVar("_E", bound=StrEnum)


class EnumString(TypeDecorator[_E]):
    """A StrEnum stored as its plain string value (VARCHAR, no native enum).

    Plain strings keep migrations simple on both backends; a CHECK constraint
    on each column keeps the database honest.
    """

    impl = String
    cache_ok = True

    def __init__(self, enum_type: type[_E], length: int = 16) -> None:
        super().__init__(length)
        self.enum_type = enum_type

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum_type(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> _E | None:
        return None if value is None else self.enum_type(value)


def _one_of(column: str, values: type[StrEnum]) -> str:
    listed = ", ".join(f"'{member.value}'" for member in values)
    return f"{column} IN ({listed})"


# Deterministic constraint names, so later migrations can address them by name
# (SQLite batch mode needs this to drop or alter a constraint).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime()}


class ScepRequest(Base):
    """One SCEP PKCSReq/RenewalReq, keyed by its transactionID."""

    __tablename__ = "scep_request"
    __table_args__ = (
        CheckConstraint(_one_of("state", RequestState), name="state"),
        CheckConstraint(_one_of("notify_state", NotifyState), name="notify_state"),
        CheckConstraint(_one_of("approval", Approval), name="approval"),
        # The sweep scans non-terminal rows by queue time.
        Index("ix_scep_request_state_queued_at", "state", "queued_at"),
        # `request list` and the console: a state's most recently changed
        # requests, and how many reached it in the last hours.
        Index("ix_scep_request_state_updated_at", "state", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Verbatim and case-sensitive: the device repeats it in every poll.
    transaction_id: Mapped[str] = mapped_column(String(255), unique=True)
    # Hex SHA-256 of the requester's SubjectPublicKeyInfo: polls and
    # retransmissions are answered only for this key.
    signer_key_id: Mapped[str] = mapped_column(String(64))
    message_type: Mapped[int] = mapped_column(Integer)
    csr_der: Mapped[bytes] = mapped_column(LargeBinary)
    signer_cert_der: Mapped[bytes] = mapped_column(LargeBinary)
    subject: Mapped[str] = mapped_column(Text)
    renewal_of_serial: Mapped[str | None] = mapped_column(String(64))
    # The SCEP endpoint it arrived at (its provider, profile and CA decide it).
    endpoint: Mapped[str] = mapped_column(
        String(64), default=DEFAULT_ENDPOINT, server_default=DEFAULT_ENDPOINT
    )
    state: Mapped[RequestState] = mapped_column(EnumString(RequestState, 24))
    # Set with VALIDATED: what vouched for the request (see Approval).
    approval: Mapped[Approval | None] = mapped_column(EnumString(Approval, 16))
    notify_state: Mapped[NotifyState] = mapped_column(
        EnumString(NotifyState, 16), default=NotifyState.NONE, server_default="NONE"
    )
    fail_info: Mapped[int | None] = mapped_column(Integer)
    fail_reason: Mapped[str | None] = mapped_column(Text)
    provider_code: Mapped[str | None] = mapped_column(String(128))
    cert_serial: Mapped[str | None] = mapped_column(String(64))
    cert_der: Mapped[bytes | None] = mapped_column(LargeBinary)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    queued_at: Mapped[datetime | None]
    # Set while the request's pipeline message sits in a dead-letter queue.
    parked_at: Mapped[datetime | None]


class RequestEvent(Base):
    """One step in a request's history (`scepline request show`)."""

    __tablename__ = "request_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("scep_request.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime]
    # "state" for the request state machine, "notify" for the notification one.
    kind: Mapped[str] = mapped_column(String(16), default="state", server_default="state")
    from_state: Mapped[str | None] = mapped_column(String(24))
    to_state: Mapped[str] = mapped_column(String(24))
    detail: Mapped[str] = mapped_column(Text, default="", server_default="")


class IssuedCertificate(Base):
    """A certificate this CA issued; the serial is unique across the store.

    A row without ``der`` is a *voided* serial: a signer claimed it and never
    stored a certificate (it died, or its token failed mid-signature). Nobody can
    show that no signature left the key, so the serial is revoked and listed on
    the CRL like any other.
    """

    __tablename__ = "certificate"
    __table_args__ = (Index("ix_certificate_issuer_revoked_at", "issuer", "revoked_at"),)

    # Lowercase hex without leading zeros, so one certificate has one key.
    serial: Mapped[str] = mapped_column(String(64), primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(255), index=True)
    issuer: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    der: Mapped[bytes | None] = mapped_column(LargeBinary)
    revoked_at: Mapped[datetime | None]
    revocation_reason: Mapped[int | None] = mapped_column(Integer)
    # spki_sha256_hex of the issuing CA's key (NULL on rows from before it was kept).
    issuer_key_id: Mapped[str | None] = mapped_column(String(64))
    # The certificate this one renewed without a challenge (Approval.RENEWAL):
    # the lineage a renewal is checked along, so revoking any link stops it.
    renews_serial: Mapped[str | None] = mapped_column(String(64))
    # The SCEP endpoint whose request it was issued for (renewals stay there).
    endpoint: Mapped[str] = mapped_column(
        String(64), default=DEFAULT_ENDPOINT, server_default=DEFAULT_ENDPOINT
    )


class IssuanceJournal(Base):
    """Every signature a CA key made, written *before* the key is used.

    Append-only (the migration adds triggers refusing UPDATE and DELETE; no
    code path changes a row, ``db prune`` leaves it alone). An auditor
    reconciles it with the certificates and CRLs the store holds
    (``scepline ca journal --check``): each entry is recorded, voided (and
    revoked), or still claimed by a signer at work.
    """

    __tablename__ = "issuance_journal"
    __table_args__ = (
        CheckConstraint(_one_of("kind", JournalKind), name="kind"),
        # One serial per kind: the claim itself is what makes a serial (or a
        # CRL number) taken, before anything is signed.
        UniqueConstraint("kind", "serial", name="uq_issuance_journal_kind_serial"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    kind: Mapped[JournalKind] = mapped_column(EnumString(JournalKind, 24))
    # spki_sha256_hex of the signing CA key, and the CA's name.
    issuer_key_id: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(Text)
    # A certificate's serial, or a CRL's number, in lowercase hex.
    serial: Mapped[str] = mapped_column(String(64))
    # Hex SHA-256 of the TBSCertificate / TBSCertList DER the key signs.
    tbs_sha256: Mapped[str] = mapped_column(String(64))
    # The certificate's subject (the issuer's name for a CRL).
    subject: Mapped[str] = mapped_column(Text)
    # The validity of what is signed (a CRL's thisUpdate and nextUpdate).
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    # The request a certificate was signed for.
    transaction_id: Mapped[str | None] = mapped_column(String(255))


class Crl(Base):
    """A published CRL. Numbers are unique across the store, hence monotonic per issuer."""

    __tablename__ = "crl"
    __table_args__ = (Index("ix_crl_issuer_key_id_number", "issuer_key_id", "number"),)

    number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    issuer_key_id: Mapped[str] = mapped_column(String(64))
    this_update: Mapped[datetime]
    next_update: Mapped[datetime]
    der: Mapped[bytes] = mapped_column(LargeBinary)


class OneTimeChallenge(Base):
    """A challenge that works once (`scepline challenge new`, "one-time" endpoints).

    Only its SHA-256 is kept; the validate step consumes it with a
    compare-and-set (``used_at`` from NULL), so of two requests racing with one
    challenge exactly one gets it. ``bound_subject``/``bound_sans`` restrict
    which names a request using it may ask for.
    """

    __tablename__ = "one_time_challenge"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Hex SHA-256 of the challenge as the device sends it.
    challenge_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    endpoint: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    # Who made it (the operator's account, or --by).
    created_by: Mapped[str] = mapped_column(String(128), default="", server_default="")
    # RFC 4514 subject a request must have exactly, if bound.
    bound_subject: Mapped[str | None] = mapped_column(Text)
    # "dns:host.example.com" lines: a request's SANs must all be among them.
    bound_sans: Mapped[str | None] = mapped_column(Text)
    used_at: Mapped[datetime | None]
    # The request (store key) that used it.
    used_by: Mapped[str | None] = mapped_column(String(255))


class Refusal(Base):
    """A request refused before it was recorded (a refused cipher, a bad
    signature, a stale signingTime, a poll for an unknown transaction): what
    `scepline request show` tells an operator who has only the transaction id.

    A bounded ring, not a log: `RequestRepository.record_refusal` keeps about
    the latest `REFUSALS_KEPT`, so a flood of refused messages cannot grow it.
    """

    __tablename__ = "refusal"
    __table_args__ = (Index("ix_refusal_transaction_id", "transaction_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    # As the client sent it (truncated to the column): the id in the logs.
    transaction_id: Mapped[str] = mapped_column(String(255))
    message_type: Mapped[int | None] = mapped_column(Integer)
    fail_info: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)


class AdminToken(Base):
    """A management API token (``scepline admin token create``).

    The secret is shown once, when it is made; only its SHA-256 is kept
    (32 random bytes: a hash that cannot be brute-forced needs no salt or
    stretching). Tokens are revoked, never deleted, so the actions taken with
    one keep naming it.
    """

    __tablename__ = "admin_token"
    __table_args__ = (CheckConstraint(_one_of("role", AdminRole), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[AdminRole] = mapped_column(EnumString(AdminRole, 16))
    # Hex SHA-256 of the secret part of the token.
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class AdminAction(Base):
    """A state-changing operator action: who (the token, or the command line),
    what, on what. Revocations are found here by serial; the request history
    names the actor too."""

    __tablename__ = "admin_action"
    __table_args__ = (Index("ix_admin_action_target", "target_kind", "target"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    # The token used (None: the command line, or a token from before).
    token_id: Mapped[int | None] = mapped_column(Integer)
    # How the actor is named in histories: "token 3 (alice, operator)", "cli".
    actor: Mapped[str] = mapped_column(String(200))
    # "revoke", "replay", "purge"...
    action: Mapped[str] = mapped_column(String(32))
    # "certificate" (serial in hex), "request" (transaction id), "dead-letter".
    target_kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(255))
    detail: Mapped[str] = mapped_column(Text, default="", server_default="")


class IntuneStatus(Base):
    """The latest Intune call each process made, and its latest failure: what
    the console shows of Intune, whichever process (validator, notifier, a
    serving process of ``scepline up``) talks to it. One row per process,
    written at most every few seconds."""

    __tablename__ = "intune_status"

    # host:pid of the reporting process.
    reporter: Mapped[str] = mapped_column(String(255), primary_key=True)
    updated_at: Mapped[datetime]
    last_call_at: Mapped[datetime | None]
    last_call: Mapped[str | None] = mapped_column(String(64))
    # success, rejected (a business "no"), unavailable, configuration, protocol
    last_outcome: Mapped[str | None] = mapped_column(String(32))
    last_latency_ms: Mapped[int | None] = mapped_column(Integer)
    # Milliseconds spent in all calls since the process started (for the mean).
    latency_ms_total: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    last_error_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    # Calls and failures since the process started.
    calls: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
