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

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scepline_shared.store._convert import (
    CERTIFICATE_COLUMNS,
    CERTIFICATE_TABLE,
    CRL_COLUMNS,
    CRL_TABLE,
    certificate_view,
    crl_view,
)
from scepline_shared.store._sql import Database, reusable
from scepline_shared.store.errors import CrlNumberCollision
from scepline_shared.store.views import CertificateView, CrlView, serial_hex

__all__ = [
    "CRL_REASON_CESSATION_OF_OPERATION",
    "CRL_REASON_UNSPECIFIED",
    "REVOCATION_REASONS",
    "REVOCATION_REASON_NAMES",
    "CertificateRepository",
    "check_aware",
    "check_key_id",
    "utc_now",
]

# RFC 5280 CRLReason values; 7 is unassigned.
REVOCATION_REASONS: frozenset[int] = frozenset(range(11)) - {7}
# RFC 5280 CRLReason codes by the names operators type (7 is unused; 8,
# removeFromCRL, belongs to delta CRLs; 10 to attribute authorities).
REVOCATION_REASON_NAMES: dict[str, int] = {
    "unspecified": 0,
    "key-compromise": 1,
    "ca-compromise": 2,
    "affiliation-changed": 3,
    "superseded": 4,
    "cessation-of-operation": 5,
    "certificate-hold": 6,
    "privilege-withdrawn": 9,
}
# A certificate signed but never released (nothing is known against it).
CRL_REASON_UNSPECIFIED = REVOCATION_REASON_NAMES["unspecified"]
# A device Intune retired or wiped: it left management; nothing says its key leaked.
CRL_REASON_CESSATION_OF_OPERATION = REVOCATION_REASON_NAMES["cessation-of-operation"]

_KEY_ID = re.compile(r"[0-9a-f]{64}")

_CERT = CERTIFICATE_TABLE.c
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
        engine = sessions.kw.get("bind")
        if not isinstance(engine, AsyncEngine):
            raise TypeError("the repository needs an async_sessionmaker bound to an AsyncEngine")
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
        self, subject_part: str, *, limit: int = 50
    ) -> list[CertificateView]:
        """Certificates whose subject DN contains `subject_part` (any case),
        newest first: how an operator finds a device's serial."""
        if not subject_part:
            raise ValueError("give part of a subject to search for")
        escaped = subject_part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = await self._db.fetch_all(
            select(*CERTIFICATE_COLUMNS)
            .where(_CERT.subject.ilike(f"%{escaped}%", escape="\\"))
            .order_by(_CERT.not_before.desc(), _CERT.serial)
            .limit(limit)
        )
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

    async def latest_crl(self, issuer_key_id: str) -> CrlView | None:
        row = await self._db.fetch_one(
            select(*CRL_COLUMNS)
            .where(CRL_TABLE.c.issuer_key_id == issuer_key_id)
            .order_by(CRL_TABLE.c.number.desc())
            .limit(1)
        )
        return None if row is None else crl_view(row)
