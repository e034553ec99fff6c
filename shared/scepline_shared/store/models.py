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
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "ALLOWED_NOTIFY_TRANSITIONS",
    "ALLOWED_TRANSITIONS",
    "NON_TERMINAL_STATES",
    "TERMINAL_STATES",
    "Base",
    "Crl",
    "EnumString",
    "IssuedCertificate",
    "NotifyState",
    "RequestEvent",
    "RequestState",
    "ScepRequest",
    "UtcDateTime",
]


class RequestState(StrEnum):
    """Where a request is in the pipeline."""

    RECEIVED = "RECEIVED"
    VALIDATED = "VALIDATED"
    REJECTED = "REJECTED"
    SIGNED = "SIGNED"
    ISSUED = "ISSUED"
    FAILED = "FAILED"


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
        {RequestState.VALIDATED, RequestState.REJECTED, RequestState.FAILED}
    ),
    RequestState.VALIDATED: frozenset({RequestState.SIGNED, RequestState.FAILED}),
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
        # The sweep scans non-terminal rows by queue time.
        Index("ix_scep_request_state_queued_at", "state", "queued_at"),
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
    state: Mapped[RequestState] = mapped_column(EnumString(RequestState, 16))
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
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="", server_default="")


class IssuedCertificate(Base):
    """A certificate this CA issued; the serial is unique across the store."""

    __tablename__ = "certificate"
    __table_args__ = (Index("ix_certificate_issuer_revoked_at", "issuer", "revoked_at"),)

    # Lowercase hex without leading zeros, so one certificate has one key.
    serial: Mapped[str] = mapped_column(String(64), primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(255), index=True)
    issuer: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    der: Mapped[bytes] = mapped_column(LargeBinary)
    revoked_at: Mapped[datetime | None]
    revocation_reason: Mapped[int | None] = mapped_column(Integer)


class Crl(Base):
    """A published CRL. Numbers are unique across the store, hence monotonic per issuer."""

    __tablename__ = "crl"
    __table_args__ = (Index("ix_crl_issuer_key_id_number", "issuer_key_id", "number"),)

    number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    issuer_key_id: Mapped[str] = mapped_column(String(64))
    this_update: Mapped[datetime]
    next_update: Mapped[datetime]
    der: Mapped[bytes] = mapped_column(LargeBinary)
