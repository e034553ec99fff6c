"""Row-to-view conversion, kept apart so the repository stays readable.

The repository selects (or returns) exactly the columns listed here, in the
order of the view's fields, so a row becomes a view positionally.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from sqlalchemy import Column, Table

from scepline_shared.store.models import (
    Crl,
    IssuanceJournal,
    IssuedCertificate,
    OneTimeChallenge,
    Refusal,
    RequestEvent,
    ScepRequest,
)
from scepline_shared.store.store_key import CsrSealer
from scepline_shared.store.views import (
    CertificateView,
    CrlView,
    EventView,
    JournalEntry,
    OneTimeChallengeView,
    RefusalView,
    RequestView,
)

__all__ = [
    "CERTIFICATE_COLUMNS",
    "CERTIFICATE_TABLE",
    "CHALLENGE_COLUMNS",
    "CHALLENGE_TABLE",
    "CRL_COLUMNS",
    "CRL_TABLE",
    "EVENT_COLUMNS",
    "EVENT_TABLE",
    "JOURNAL_COLUMNS",
    "JOURNAL_TABLE",
    "REFUSAL_COLUMNS",
    "REFUSAL_TABLE",
    "REQUEST_COLUMNS",
    "REQUEST_TABLE",
    "certificate_view",
    "challenge_view",
    "crl_view",
    "event_view",
    "journal_entry",
    "refusal_view",
    "request_view",
]

REQUEST_TABLE: Table = ScepRequest.__table__  # type: ignore[assignment]
EVENT_TABLE: Table = RequestEvent.__table__  # type: ignore[assignment]
CERTIFICATE_TABLE: Table = IssuedCertificate.__table__  # type: ignore[assignment]
CRL_TABLE: Table = Crl.__table__  # type: ignore[assignment]
JOURNAL_TABLE: Table = IssuanceJournal.__table__  # type: ignore[assignment]
REFUSAL_TABLE: Table = Refusal.__table__  # type: ignore[assignment]
CHALLENGE_TABLE: Table = OneTimeChallenge.__table__  # type: ignore[assignment]


def _columns(table: Table, view: type) -> tuple[Column[Any], ...]:
    return tuple(table.c[field.name] for field in fields(view))


REQUEST_COLUMNS = _columns(REQUEST_TABLE, RequestView)
EVENT_COLUMNS = _columns(EVENT_TABLE, EventView)
CERTIFICATE_COLUMNS = _columns(CERTIFICATE_TABLE, CertificateView)
CRL_COLUMNS = _columns(CRL_TABLE, CrlView)
JOURNAL_COLUMNS = _columns(JOURNAL_TABLE, JournalEntry)
REFUSAL_COLUMNS = _columns(REFUSAL_TABLE, RefusalView)
CHALLENGE_COLUMNS = _columns(CHALLENGE_TABLE, OneTimeChallengeView)

_REQUEST_FIELDS = [field.name for field in fields(RequestView)]
_CSR = _REQUEST_FIELDS.index("csr_der")
_TRANSACTION_ID = _REQUEST_FIELDS.index("transaction_id")


def request_view(row: Sequence[Any], sealer: CsrSealer) -> RequestView:
    """A row of REQUEST_COLUMNS, its CSR opened (stored rows hold it sealed)."""
    values = list(row)
    values[_CSR] = sealer.open(values[_CSR], values[_TRANSACTION_ID])
    return RequestView(*values)


def event_view(row: Sequence[Any]) -> EventView:
    """A row of EVENT_COLUMNS."""
    return EventView(*row)


def certificate_view(row: Sequence[Any]) -> CertificateView:
    """A row of CERTIFICATE_COLUMNS."""
    return CertificateView(*row)


def crl_view(row: Sequence[Any]) -> CrlView:
    """A row of CRL_COLUMNS."""
    return CrlView(*row)


def journal_entry(row: Sequence[Any]) -> JournalEntry:
    """A row of JOURNAL_COLUMNS."""
    return JournalEntry(*row)


def challenge_view(row: Sequence[Any]) -> OneTimeChallengeView:
    """A row of CHALLENGE_COLUMNS."""
    return OneTimeChallengeView(*row)


def refusal_view(row: Sequence[Any]) -> RefusalView:
    """A row of REFUSAL_COLUMNS."""
    return RefusalView(*row)
