"""One-time challenges: made by `scepline challenge new`, consumed once by the
validate step of a "one-time" endpoint.

Only the SHA-256 of a challenge is stored (they are 128 random bits, so the
hash cannot be searched back). Consumption is one compare-and-set statement
(``used_at`` from NULL, unexpired, this endpoint): of any number of requests
racing with one challenge exactly one gets it, on SQLite and PostgreSQL alike.
`RequestRepository` inherits these methods.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import bindparam, delete, insert, or_, select, update

from scepline_shared.store._convert import CHALLENGE_COLUMNS, CHALLENGE_TABLE, challenge_view
from scepline_shared.store._sql import Database, reusable
from scepline_shared.store.certificates import check_aware
from scepline_shared.store.views import OneTimeChallengeView

__all__ = ["ChallengeRepository", "Consumed", "challenge_sha256"]

_CH = CHALLENGE_TABLE.c
_BY_HASH = reusable(
    select(*CHALLENGE_COLUMNS).where(_CH.challenge_sha256 == bindparam("challenge_sha256"))
)
_CONSUME = reusable(
    update(CHALLENGE_TABLE)
    .where(
        _CH.challenge_sha256 == bindparam("where_sha256"),
        _CH.endpoint == bindparam("where_endpoint"),
        _CH.used_at.is_(None),
        _CH.expires_at > bindparam("where_now"),
    )
    .values(used_at=bindparam("set_used_at"), used_by=bindparam("set_used_by"))
)


def challenge_sha256(challenge: bytes | str) -> str:
    """How a challenge is stored and looked up: hex SHA-256 of its bytes."""
    data = challenge.encode() if isinstance(challenge, str) else challenge
    return hashlib.sha256(data).hexdigest()


class Consumed(enum.Enum):
    """What `consume_challenge` found."""

    USED_NOW = "used now"
    # This request had used it already (a redelivered validate step).
    USED_BY_THIS_REQUEST = "used by this request"
    UNKNOWN = "unknown"
    OTHER_ENDPOINT = "for another endpoint"
    USED = "already used"
    EXPIRED = "expired"


class ChallengeRepository:
    _db: Database
    _clock: Callable[[], datetime]

    async def add_challenges(
        self,
        *,
        endpoint: str,
        hashes: Sequence[str],
        expires_at: datetime,
        created_by: str = "",
        bound_subject: str | None = None,
        bound_sans: Sequence[str] = (),
    ) -> None:
        """Store challenges (as their `challenge_sha256`), all in one transaction."""
        check_aware("expires_at", expires_at)
        now = self._clock()
        rows = [
            {
                "challenge_sha256": digest,
                "endpoint": endpoint,
                "created_at": now,
                "expires_at": expires_at,
                "created_by": created_by[:128],
                "bound_subject": bound_subject,
                "bound_sans": "\n".join(bound_sans) or None,
            }
            for digest in hashes
        ]
        async with self._db.transaction() as connection:
            await connection.execute(insert(CHALLENGE_TABLE), rows)

    async def challenge(self, digest: str) -> OneTimeChallengeView | None:
        row = await self._db.fetch_one(_BY_HASH, {"challenge_sha256": digest})
        return None if row is None else challenge_view(row)

    async def consume_challenge(
        self, *, digest: str, endpoint: str, transaction_id: str
    ) -> tuple[Consumed, OneTimeChallengeView | None]:
        """Use the challenge with this hash for ``transaction_id``, unless it is
        used, expired or another endpoint's; what happened, and the challenge."""
        now = self._clock()
        won = await self._db.rowcount(
            _CONSUME,
            {
                "where_sha256": digest,
                "where_endpoint": endpoint,
                "where_now": now,
                "set_used_at": now,
                "set_used_by": transaction_id,
            },
        )
        found = await self.challenge(digest)
        if won:
            return Consumed.USED_NOW, found
        if found is None:
            return Consumed.UNKNOWN, None
        if found.endpoint != endpoint:
            return Consumed.OTHER_ENDPOINT, found
        if found.used_at is not None:
            if found.used_by == transaction_id:
                return Consumed.USED_BY_THIS_REQUEST, found
            return Consumed.USED, found
        return Consumed.EXPIRED, found

    async def challenges(
        self, *, endpoint: str | None = None, limit: int = 100
    ) -> list[OneTimeChallengeView]:
        """Challenges, newest first (their hashes: the challenges are not kept)."""
        statement = select(*CHALLENGE_COLUMNS).order_by(_CH.id.desc()).limit(limit)
        if endpoint is not None:
            statement = statement.where(_CH.endpoint == endpoint)
        return [challenge_view(row) for row in await self._db.fetch_all(statement)]

    async def prune_challenges(self, *, before: datetime) -> int:
        """Delete challenges used or expired before ``before``; how many."""
        check_aware("before", before)
        return await self._db.rowcount(
            delete(CHALLENGE_TABLE).where(
                or_(_CH.used_at < before, _CH.expires_at < before),
            )
        )
