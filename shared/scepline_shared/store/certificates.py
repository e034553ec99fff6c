"""Certificates this CA issued, their revocation, and published CRLs.

`RequestRepository` inherits these methods; a CRL publisher or an operator
command that needs only certificates can use `CertificateRepository` alone.
Every method is atomic and returns frozen views; reads and single-statement
writes cost one round trip (see `_sql.py`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import bindparam, delete, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scepline_shared.revocation import (
    CESSATION_OF_OPERATION,
    REASON_CODES,
    REASON_NAMES,
    SUPERSEDED,
    UNSPECIFIED,
)
from scepline_shared.store._convert import (
    CERTIFICATE_COLUMNS,
    CERTIFICATE_TABLE,
    CRL_COLUMNS,
    CRL_TABLE,
    JOURNAL_COLUMNS,
    JOURNAL_TABLE,
    certificate_view,
    crl_view,
    journal_entry,
)
from scepline_shared.store._sql import Database, bound_engine, reusable
from scepline_shared.store.errors import CrlNumberCollision
from scepline_shared.store.models import JournalKind
from scepline_shared.store.views import (
    CertificateStatusView,
    CertificateView,
    CrlView,
    JournalEntry,
    serial_hex,
)

__all__ = [
    "CRL_REASON_CESSATION_OF_OPERATION",
    "CRL_REASON_SUPERSEDED",
    "CRL_REASON_UNSPECIFIED",
    "REVOCATION_REASONS",
    "REVOCATION_REASON_NAMES",
    "CertificateRepository",
    "check_aware",
    "check_key_id",
    "utc_now",
]

# The reason table lives in scepline_shared.revocation; these names stay for callers.
REVOCATION_REASONS = REASON_CODES
REVOCATION_REASON_NAMES = REASON_NAMES
CRL_REASON_UNSPECIFIED = UNSPECIFIED
CRL_REASON_SUPERSEDED = SUPERSEDED
CRL_REASON_CESSATION_OF_OPERATION = CESSATION_OF_OPERATION

_KEY_ID = re.compile(r"[0-9a-f]{64}")

# Renewals a lineage walk follows at most (a device renewing monthly for a
# century); a loop cannot form, since a certificate only renews an older one.
_MAX_LINEAGE = 1200

_CERT = CERTIFICATE_TABLE.c
_CA_OWN_KINDS = (
    JournalKind.CA_CERTIFICATE,
    JournalKind.RA_CERTIFICATE,
    JournalKind.OCSP_CERTIFICATE,
)
_GET_CERTIFICATE = reusable(select(*CERTIFICATE_COLUMNS).where(_CERT.serial == bindparam("serial")))


def utc_now() -> datetime:
    return datetime.now(UTC)


def check_aware(name: str, value: datetime) -> None:
    """Refuse naive datetimes early, with a plain ValueError naming the argument."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def check_key_id(key_id: str) -> None:
    """Key ids have one spelling (lowercase hex SHA-256), so comparing them is equality."""
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError("key id must be a lowercase hex SHA-256 (64 characters)")


class CertificateRepository:
    """Certificates and CRLs over one `async_sessionmaker` bound to an `AsyncEngine`.

    Only the sessionmaker's engine is used: statements run on its connections
    directly (Core, no ORM unit of work). `clock` exists for tests; it must
    return aware datetimes.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        engine = bound_engine(sessions)
        self._sessions = sessions
        self._clock = clock
        self._db = Database(engine)

    async def get_certificate(self, serial: str | int) -> CertificateView | None:
        row = await self._db.fetch_one(_GET_CERTIFICATE, {"serial": serial_hex(serial)})
        return None if row is None else certificate_view(row)

    async def issuers(self) -> list[str]:
        """Every issuer name certificates were issued under (one per CA name)."""
        rows = await self._db.fetch_all(select(_CERT.issuer).distinct().order_by(_CERT.issuer))
        return [row[0] for row in rows]

    async def find_certificates(
        self, subject_part: str, *, limit: int = 50, endpoint: str | None = None
    ) -> list[CertificateView]:
        """Certificates whose subject DN contains `subject_part` (any case) and,
        if given, issued at `endpoint` (then `subject_part` may be empty),
        newest first: how an operator finds a device's serial."""
        if not subject_part and endpoint is None:
            raise ValueError("give part of a subject to search for")
        escaped = subject_part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = (
            select(*CERTIFICATE_COLUMNS)
            .where(_CERT.subject.ilike(f"%{escaped}%", escape="\\"))
            .order_by(_CERT.not_before.desc(), _CERT.serial)
            .limit(limit)
        )
        if endpoint is not None:
            statement = statement.where(_CERT.endpoint == endpoint)
        rows = await self._db.fetch_all(statement)
        return [certificate_view(row) for row in rows]

    async def revoke(
        self, serial: str | int, *, reason: int, at: datetime | None = None
    ) -> CertificateView | None:
        """Revoke a certificate; None if unknown.

        Revoking twice keeps the first date and reason (what CRLs already said).
        """
        if reason not in REVOCATION_REASONS:
            raise ValueError(f"revocation reason {reason} is not an RFC 5280 CRLReason")
        key = serial_hex(serial)
        when = self._clock() if at is None else at
        check_aware("at", when)
        row = await self._db.fetch_one(
            update(CERTIFICATE_TABLE)
            .where(_CERT.serial == key, _CERT.revoked_at.is_(None))
            .values(revoked_at=when, revocation_reason=reason)
            .returning(*CERTIFICATE_COLUMNS)
        )
        if row is None:  # unknown, or revoked before: revocation is never undone
            return await self.get_certificate(key)
        return certificate_view(row)

    async def revoked(
        self, issuer: str, *, expiring_from: datetime | None = None
    ) -> list[CertificateView]:
        """Revoked certificates of `issuer`, for building its CRL; with
        `expiring_from`, only those still valid at that moment or later."""
        conditions = [_CERT.issuer == issuer, _CERT.revoked_at.is_not(None)]
        if expiring_from is not None:
            check_aware("expiring_from", expiring_from)
            conditions.append(_CERT.not_after >= expiring_from)
        rows = await self._db.fetch_all(
            select(*CERTIFICATE_COLUMNS).where(*conditions).order_by(_CERT.revoked_at, _CERT.serial)
        )
        return [certificate_view(row) for row in rows]

    async def store_crl(
        self,
        *,
        number: int,
        issuer_key_id: str,
        this_update: datetime,
        next_update: datetime,
        der: bytes,
    ) -> CrlView:
        """Keep a published CRL. CrlNumberCollision if the number is taken."""
        check_key_id(issuer_key_id)
        check_aware("this_update", this_update)
        check_aware("next_update", next_update)
        view = CrlView(
            number=number,
            issuer_key_id=issuer_key_id,
            this_update=this_update,
            next_update=next_update,
            der=der,
        )
        try:
            await self._db.rowcount(
                insert(CRL_TABLE).values(
                    {column.name: getattr(view, column.name) for column in CRL_COLUMNS}
                )
            )
        except IntegrityError as exc:
            raise CrlNumberCollision(number) from exc
        return view

    async def prune_crls(self, *, expired_before: datetime) -> int:
        """Delete CRLs whose nextUpdate passed before `expired_before` and that a
        newer CRL of the same CA replaced (each CA's latest always stays); how many."""
        check_aware("expired_before", expired_before)
        newer = CRL_TABLE.alias("newer")
        superseded = (
            select(func.count())
            .select_from(newer)
            .where(
                newer.c.issuer_key_id == CRL_TABLE.c.issuer_key_id,
                newer.c.number > CRL_TABLE.c.number,
            )
            .scalar_subquery()
        )
        return await self._db.rowcount(
            delete(CRL_TABLE).where(CRL_TABLE.c.next_update < expired_before, superseded > 0)
        )

    # -- the issuance journal -------------------------------------------------

    async def claim_crl_number(
        self,
        *,
        number: int,
        issuer_key_id: str,
        issuer: str,
        this_update: datetime,
        next_update: datetime,
        tbs_sha256: str,
    ) -> bool:
        """Journal a CRL about to be signed; False (nothing written) if its
        number is taken: CRL numbers are unique across the store, and the
        journal entry is what takes one, before the CA key signs."""
        check_key_id(issuer_key_id)
        try:
            await self._db.rowcount(
                insert(JOURNAL_TABLE).values(
                    at=self._clock(),
                    kind=JournalKind.CRL,
                    issuer_key_id=issuer_key_id,
                    issuer=issuer,
                    serial=format(number, "x"),
                    tbs_sha256=tbs_sha256,
                    subject=issuer,
                    not_before=this_update,
                    not_after=next_update,
                    transaction_id=None,
                )
            )
        except IntegrityError:
            return False
        return True

    async def journal_ca_certificate(
        self,
        *,
        kind: JournalKind,
        issuer_key_id: str,
        issuer: str,
        serial: str | int,
        subject: str,
        not_before: datetime,
        not_after: datetime,
        tbs_sha256: str,
    ) -> bool:
        """Journal one of the CA's own certificates (a generation's CA or RA
        certificate: ``ca init`` and ``ca rollover`` make them as files, before
        a store may exist; an OCSP responder certificate, before the CA key
        signs it); True if it was new. Idempotent: every process that loads the
        CA calls it."""
        check_key_id(issuer_key_id)
        if kind not in _CA_OWN_KINDS:
            raise ValueError(f"{kind} entries are written by their own signing path")
        try:
            await self._db.rowcount(
                insert(JOURNAL_TABLE).values(
                    at=self._clock(),
                    kind=kind,
                    issuer_key_id=issuer_key_id,
                    issuer=issuer,
                    serial=serial_hex(serial),
                    tbs_sha256=tbs_sha256,
                    subject=subject,
                    not_before=not_before,
                    not_after=not_after,
                    transaction_id=None,
                )
            )
        except IntegrityError:
            return False  # journaled before (by this process or another)
        return True

    async def journal_entry(self, kind: JournalKind, serial: str | int) -> JournalEntry | None:
        """The entry of one certificate serial (or CRL number) of ``kind``."""
        row = await self._db.fetch_one(
            select(*JOURNAL_COLUMNS).where(
                JOURNAL_TABLE.c.kind == kind, JOURNAL_TABLE.c.serial == serial_hex(serial)
            )
        )
        return None if row is None else journal_entry(row)

    async def journal(self, *, after_id: int = 0, limit: int = 1000) -> list[JournalEntry]:
        """Journal entries in the order they were written, from ``after_id`` on."""
        rows = await self._db.fetch_all(
            select(*JOURNAL_COLUMNS)
            .where(JOURNAL_TABLE.c.id > after_id)
            .order_by(JOURNAL_TABLE.c.id)
            .limit(limit)
        )
        return [journal_entry(row) for row in rows]

    async def certificates_by_serial(self, serials: list[str]) -> dict[str, CertificateView]:
        """The certificate rows (voided ones included) of these serials."""
        if not serials:
            return {}
        rows = await self._db.fetch_all(
            select(*CERTIFICATE_COLUMNS).where(_CERT.serial.in_(serials))
        )
        return {row[0]: certificate_view(row) for row in rows}

    async def certificate_statuses(self, serials: list[str]) -> dict[str, CertificateStatusView]:
        """The revocation statuses (voided serials included) of these serials:
        what the OCSP responder reads, without the certificates themselves."""
        if not serials:
            return {}
        rows = await self._db.fetch_all(
            select(
                _CERT.serial,
                _CERT.issuer,
                _CERT.issuer_key_id,
                _CERT.not_before,
                _CERT.revoked_at,
                _CERT.revocation_reason,
                _CERT.der.is_(None),
            ).where(_CERT.serial.in_(serials))
        )
        return {row[0]: CertificateStatusView(*row[:6], voided=bool(row[6])) for row in rows}

    async def crls_by_number(self, numbers: list[int]) -> dict[int, CrlView]:
        """The stored CRLs with these numbers."""
        if not numbers:
            return {}
        rows = await self._db.fetch_all(select(*CRL_COLUMNS).where(CRL_TABLE.c.number.in_(numbers)))
        return {int(row[0]): crl_view(row) for row in rows}

    async def unjournaled(self) -> tuple[list[str], list[int], int]:
        """What the store holds without a journal entry: certificates recorded
        since the journal exists (they carry their issuer's key id), CRL
        numbers, and how many certificates predate the journal (no key id)."""
        journal = JOURNAL_TABLE.alias("entry")
        certificates = await self._db.fetch_all(
            select(_CERT.serial).where(
                _CERT.issuer_key_id.is_not(None),
                ~select(journal.c.id)
                .where(journal.c.kind == JournalKind.CERTIFICATE, journal.c.serial == _CERT.serial)
                .exists(),
            )
        )
        crl_numbers = {int(row[0]) for row in await self._db.fetch_all(select(CRL_TABLE.c.number))}
        journaled = {
            int(row[0], 16)
            for row in await self._db.fetch_all(
                select(JOURNAL_TABLE.c.serial).where(JOURNAL_TABLE.c.kind == JournalKind.CRL)
            )
        }
        legacy = await self._db.fetch_one(
            select(func.count()).select_from(CERTIFICATE_TABLE).where(_CERT.issuer_key_id.is_(None))
        )
        return (
            [row[0] for row in certificates],
            sorted(crl_numbers - journaled),
            int(legacy[0]) if legacy is not None else 0,
        )

    async def revoked_in_lineage(self, serial: str | int) -> str | None:
        """The first revoked certificate along ``serial``'s renewal lineage
        (itself, the certificate it renewed without a challenge, and so on),
        or None: revoking any link stops renewals from every later one."""
        start = serial_hex(serial)
        chain = (
            select(_CERT.serial, _CERT.renews_serial, _CERT.revoked_at, literal(0).label("depth"))
            .where(_CERT.serial == start)
            .cte("lineage", recursive=True)
        )
        parent = CERTIFICATE_TABLE.alias("parent")
        chain = chain.union_all(
            select(
                parent.c.serial,
                parent.c.renews_serial,
                parent.c.revoked_at,
                (chain.c.depth + 1).label("depth"),
            ).where(parent.c.serial == chain.c.renews_serial, chain.c.depth < _MAX_LINEAGE)
        )
        row = await self._db.fetch_one(
            select(chain.c.serial)
            .where(chain.c.revoked_at.is_not(None))
            .order_by(chain.c.depth)
            .limit(1)
        )
        return None if row is None else str(row[0])

    async def latest_crl(self, issuer_key_id: str) -> CrlView | None:
        row = await self._db.fetch_one(
            select(*CRL_COLUMNS)
            .where(CRL_TABLE.c.issuer_key_id == issuer_key_id)
            .order_by(CRL_TABLE.c.number.desc())
            .limit(1)
        )
        return None if row is None else crl_view(row)
