"""What the operator console and the management API keep and read: API tokens,
the actions taken with them, each process's latest Intune call, and the
figures of the dashboard (``scepline admin-api``, ``scepline admin token``).

Like the repository, every method is one atomic statement (or a read) and
returns frozen views; rows never leave this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scepline_shared.store._convert import REQUEST_TABLE
from scepline_shared.store._sql import Database, bound_engine
from scepline_shared.store.certificates import check_aware, utc_now
from scepline_shared.store.models import (
    AdminAction,
    AdminRole,
    AdminToken,
    IntuneStatus,
    RequestState,
)

__all__ = [
    "AdminActionView",
    "AdminRepository",
    "AdminTokenView",
    "IntuneStatusView",
    "StateFigures",
]

TOKEN_TABLE: Table = AdminToken.__table__  # type: ignore[assignment]
ACTION_TABLE: Table = AdminAction.__table__  # type: ignore[assignment]
INTUNE_TABLE: Table = IntuneStatus.__table__  # type: ignore[assignment]
_REQ = REQUEST_TABLE.c
_TOKEN = TOKEN_TABLE.c
_ACTION = ACTION_TABLE.c
_INTUNE = INTUNE_TABLE.c

_MAX_NAME = 100
_MAX_ACTOR = 200
_MAX_TARGET = 255
_MAX_DETAIL = 2000


@dataclass(frozen=True, slots=True)
class AdminTokenView:
    id: int
    name: str
    role: AdminRole
    secret_sha256: str = field(repr=False)
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def status(self, now: datetime) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class AdminActionView:
    id: int
    at: datetime
    token_id: int | None
    actor: str
    action: str
    target_kind: str
    target: str
    detail: str


@dataclass(frozen=True, slots=True)
class IntuneStatusView:
    reporter: str
    updated_at: datetime
    last_call_at: datetime | None
    last_call: str | None
    last_outcome: str | None
    last_latency_ms: int | None
    latency_ms_total: int
    last_error_at: datetime | None
    last_error: str | None
    calls: int
    failures: int


@dataclass(frozen=True, slots=True)
class StateFigures:
    """Requests in one state: how many, and the one untouched the longest."""

    count: int
    oldest_update: datetime | None


_TOKEN_COLUMNS = tuple(TOKEN_TABLE.c[f.name] for f in fields(AdminTokenView))
_ACTION_COLUMNS = tuple(ACTION_TABLE.c[f.name] for f in fields(AdminActionView))
_INTUNE_COLUMNS = tuple(INTUNE_TABLE.c[f.name] for f in fields(IntuneStatusView))


class AdminRepository:
    """Tokens, actions, Intune status and dashboard figures over one store."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        engine = bound_engine(sessions)
        self._db = Database(engine)
        self._clock = clock
        self._dialect = engine.dialect.name

    # -- tokens ------------------------------------------------------------------

    async def create_token(
        self, *, name: str, role: AdminRole, secret_sha256: str, expires_at: datetime | None
    ) -> AdminTokenView:
        if expires_at is not None:
            check_aware("expires_at", expires_at)
        row = await self._db.fetch_one(
            insert(TOKEN_TABLE)
            .values(
                name=name[:_MAX_NAME],
                role=AdminRole(role),
                secret_sha256=secret_sha256,
                created_at=self._clock(),
                expires_at=expires_at,
            )
            .returning(*_TOKEN_COLUMNS)
        )
        assert row is not None
        return AdminTokenView(*row)

    async def token(self, token_id: int) -> AdminTokenView | None:
        row = await self._db.fetch_one(select(*_TOKEN_COLUMNS).where(_TOKEN.id == token_id))
        return None if row is None else AdminTokenView(*row)

    async def tokens(self) -> list[AdminTokenView]:
        rows = await self._db.fetch_all(select(*_TOKEN_COLUMNS).order_by(_TOKEN.id))
        return [AdminTokenView(*row) for row in rows]

    async def revoke_token(self, token_id: int) -> AdminTokenView | None:
        """Revoke a token now (a second revocation keeps the first time); None if unknown."""
        await self._db.rowcount(
            update(TOKEN_TABLE)
            .where(_TOKEN.id == token_id, _TOKEN.revoked_at.is_(None))
            .values(revoked_at=self._clock())
        )
        return await self.token(token_id)

    async def token_used(self, token_id: int) -> None:
        await self._db.rowcount(
            update(TOKEN_TABLE).where(_TOKEN.id == token_id).values(last_used_at=self._clock())
        )

    # -- who did what --------------------------------------------------------------

    async def record_action(
        self,
        *,
        token_id: int | None,
        actor: str,
        action: str,
        target_kind: str,
        target: str,
        detail: str = "",
    ) -> None:
        await self._db.rowcount(
            insert(ACTION_TABLE).values(
                at=self._clock(),
                token_id=token_id,
                actor=actor[:_MAX_ACTOR],
                action=action,
                target_kind=target_kind,
                target=target[:_MAX_TARGET],
                detail=detail[:_MAX_DETAIL],
            )
        )

    async def actions(
        self, *, target_kind: str | None = None, target: str | None = None, limit: int = 100
    ) -> list[AdminActionView]:
        """Actions, newest first; on one target when given."""
        statement = select(*_ACTION_COLUMNS)
        if target_kind is not None:
            statement = statement.where(_ACTION.target_kind == target_kind)
        if target is not None:
            statement = statement.where(_ACTION.target == target)
        rows = await self._db.fetch_all(statement.order_by(_ACTION.id.desc()).limit(limit))
        return [AdminActionView(*row) for row in rows]

    # -- Intune ----------------------------------------------------------------------

    async def report_intune(self, status: IntuneStatusView) -> None:
        """This process's row, inserted or replaced."""
        values: dict[str, Any] = {f.name: getattr(status, f.name) for f in fields(status)}
        dialect_insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        statement = dialect_insert(INTUNE_TABLE).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=["reporter"],
            set_={name: value for name, value in values.items() if name != "reporter"},
        )
        await self._db.rowcount(statement)

    async def intune_statuses(self, *, since: datetime) -> list[IntuneStatusView]:
        """Rows of the processes that reported since ``since``, latest call first."""
        rows = await self._db.fetch_all(
            select(*_INTUNE_COLUMNS)
            .where(_INTUNE.updated_at >= since)
            .order_by(_INTUNE.last_call_at.desc())
        )
        return [IntuneStatusView(*row) for row in rows]

    # -- the dashboard ---------------------------------------------------------------

    async def state_figures(
        self, states: list[RequestState], *, changed_since: datetime | None = None
    ) -> dict[RequestState, StateFigures]:
        """Per state, the requests in it (changed since ``changed_since``, if
        given) and the oldest change among them; states without one are absent."""
        conditions = [_REQ.state.in_(states)]
        if changed_since is not None:
            check_aware("changed_since", changed_since)
            conditions.append(_REQ.updated_at >= changed_since)
        rows = await self._db.fetch_all(
            select(_REQ.state, func.count(), func.min(_REQ.updated_at))
            .where(*conditions)
            .group_by(_REQ.state)
        )
        return {RequestState(row[0]): StateFigures(int(row[1]), _aware(row[2])) for row in rows}

    async def parked_count(self) -> int:
        row = await self._db.fetch_one(
            select(func.count()).select_from(REQUEST_TABLE).where(_REQ.parked_at.is_not(None))
        )
        return 0 if row is None else int(row[0])

    async def per_hour(self, state: RequestState, *, hours: int) -> list[tuple[datetime, int]]:
        """Requests that reached ``state`` (final states: their last change) in
        each of the last ``hours`` hours, oldest first, empty hours included."""
        now = self._clock()
        start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
        if self._dialect == "postgresql":
            bucket = func.date_trunc("hour", _REQ.updated_at)
        else:  # SQLite keeps naive UTC text: "YYYY-MM-DD HH:MM:SS..."
            bucket = func.strftime("%Y-%m-%d %H:00:00", _REQ.updated_at)
        rows = await self._db.fetch_all(
            select(bucket.label("hour"), func.count())
            .where(_REQ.state == state, _REQ.updated_at >= start)
            .group_by("hour")
        )
        counts: dict[datetime, int] = {}
        for hour, count in rows:
            if isinstance(hour, str):
                hour = datetime.fromisoformat(hour).replace(tzinfo=start.tzinfo)
            counts[_aware(hour).replace(minute=0, second=0, microsecond=0)] = int(count)  # type: ignore[union-attr]
        return [
            (start + timedelta(hours=i), counts.get(start + timedelta(hours=i), 0))
            for i in range(hours)
        ]


def _aware(value: datetime | str | None) -> datetime | None:
    """An aggregate's datetime (SQLite gives text, naive, in UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value
