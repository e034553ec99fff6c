"""Management API tokens: made by ``scepline admin token create``, shown once.

A token reads ``sctok_<id>_<secret>``: the id finds its row, the secret (32
random bytes, base64url) is checked against the SHA-256 the row keeps, in
constant time. The secret is never stored, logged or shown again; a lost
token is revoked and another made.

No web framework here: the command line imports this module.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from scepline_shared.store.admin import AdminRepository, AdminTokenView
from scepline_shared.store.models import AdminRole

__all__ = [
    "PREFIX",
    "NewToken",
    "Principal",
    "authenticate",
    "create_token",
    "parse_token",
    "secret_digest",
]

PREFIX = "sctok"
_TOKEN = re.compile(rf"{PREFIX}_([1-9][0-9]{{0,17}})_([A-Za-z0-9_-]{{43}})")
# Last use is written at most this often per token and process.
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a token that is valid now."""

    token_id: int
    name: str
    role: AdminRole

    @property
    def is_operator(self) -> bool:
        return self.role is AdminRole.OPERATOR

    @property
    def actor(self) -> str:
        """How histories name it."""
        return f"token {self.token_id} {self.name!r} ({self.role.value})"


@dataclass(frozen=True)
class NewToken:
    token: str  # the only time it exists in full
    view: AdminTokenView


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(presented: str) -> tuple[int, str] | None:
    """(id, secret) of a well-formed token, else None."""
    match = _TOKEN.fullmatch(presented.strip())
    if match is None:
        return None
    return int(match.group(1)), match.group(2)


async def create_token(
    admin: AdminRepository, *, name: str, role: AdminRole, valid_for: timedelta | None
) -> NewToken:
    secret = secrets.token_urlsafe(32)
    expires = None if valid_for is None else datetime.now(UTC) + valid_for
    view = await admin.create_token(
        name=name, role=role, secret_sha256=secret_digest(secret), expires_at=expires
    )
    return NewToken(f"{PREFIX}_{view.id}_{secret}", view)


class TokenChecker:
    """Checks presented tokens against the store (every time: a revoked token
    stops working at once) and notes their use now and then."""

    def __init__(self, admin: AdminRepository) -> None:
        self._admin = admin
        self._touched: dict[int, datetime] = {}

    async def principal(self, presented: str) -> Principal | None:
        parsed = parse_token(presented)
        if parsed is None:
            return None
        token_id, secret = parsed
        view = await self._admin.token(token_id)
        if view is None or not hmac.compare_digest(view.secret_sha256, secret_digest(secret)):
            return None
        return await self.valid(view)

    async def by_id(self, token_id: int) -> Principal | None:
        """The token a console session was opened with, if it is still valid."""
        view = await self._admin.token(token_id)
        return None if view is None else await self.valid(view)

    async def valid(self, view: AdminTokenView) -> Principal | None:
        now = datetime.now(UTC)
        if view.status(now) != "active":
            return None
        last = self._touched.get(view.id)
        if last is None or now - last >= _TOUCH_EVERY:
            self._touched[view.id] = now
            await self._admin.token_used(view.id)
        return Principal(view.id, view.name, view.role)


async def authenticate(admin: AdminRepository, presented: str) -> Principal | None:
    """One check without a :class:`TokenChecker` (tests, scripts)."""
    return await TokenChecker(admin).principal(presented)
