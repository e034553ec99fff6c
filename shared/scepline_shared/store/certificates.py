"""Certificates this CA issued, their revocation, and published CRLs.

`RequestRepository` inherits these methods; a CRL publisher or an operator
command that needs only certificates can use `CertificateRepository` alone.
Every method is one transaction and returns frozen views.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scepline_shared.store._convert import certificate_view, crl_view
from scepline_shared.store.errors import CrlNumberCollision
from scepline_shared.store.models import Crl, IssuedCertificate
from scepline_shared.store.views import CertificateView, CrlView, serial_hex

__all__ = ["REVOCATION_REASONS", "CertificateRepository", "check_aware", "check_key_id", "utc_now"]

# RFC 5280 CRLReason values; 7 is unassigned.
REVOCATION_REASONS: frozenset[int] = frozenset(range(11)) - {7}

_KEY_ID = re.compile(r"[0-9a-f]{64}")


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
    """Certificates and CRLs over one `async_sessionmaker`.

    `clock` exists for tests; it must return aware datetimes.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        # Hot paths use Core on the engine: no unit of work, and reads run
        # without a transaction (one round trip instead of BEGIN/SELECT/ROLLBACK).
        engine = sessions.kw["bind"]
        self._engine: AsyncEngine = engine
        self._reader: AsyncEngine = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def get_certificate(self, serial: str | int) -> CertificateView | None:
        table = IssuedCertificate.__table__
        async with self._reader.connect() as connection:
            result = await connection.execute(
                select(table).where(table.c.serial == serial_hex(serial))
            )
            row = result.first()
        return None if row is None else certificate_view(row)  # type: ignore[arg-type]

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
        async with self._sessions.begin() as session:
            await session.execute(
                update(IssuedCertificate)
                .where(IssuedCertificate.serial == key, IssuedCertificate.revoked_at.is_(None))
                .values(revoked_at=when, revocation_reason=reason)
                .execution_options(synchronize_session=False)
            )
            row = await session.get(IssuedCertificate, key)
            return None if row is None else certificate_view(row)

    async def revoked(self, issuer: str) -> list[CertificateView]:
        """Revoked certificates of `issuer`, for building its CRL."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(IssuedCertificate)
                .where(
                    IssuedCertificate.issuer == issuer,
                    IssuedCertificate.revoked_at.is_not(None),
                )
                .order_by(IssuedCertificate.revoked_at, IssuedCertificate.serial)
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
        try:
            async with self._sessions.begin() as session:
                row = Crl(
                    number=number,
                    issuer_key_id=issuer_key_id,
                    this_update=this_update,
                    next_update=next_update,
                    der=der,
                )
                session.add(row)
                await session.flush()
                return crl_view(row)
        except IntegrityError as exc:
            raise CrlNumberCollision(number) from exc

    async def latest_crl(self, issuer_key_id: str) -> CrlView | None:
        async with self._sessions() as session:
            row = await session.scalar(
                select(Crl)
                .where(Crl.issuer_key_id == issuer_key_id)
                .order_by(Crl.number.desc())
                .limit(1)
            )
            return None if row is None else crl_view(row)
