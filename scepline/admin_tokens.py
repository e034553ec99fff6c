"""``scepline admin token create|list|revoke``: the management API's tokens.

``create`` prints the token once, as its last line (scripts take it with
``tail -1``); only its SHA-256 is kept. Tokens are revoked, never deleted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scepline_shared.settings import Settings
from scepline_shared.store.models import AdminRole

from .admin_api import tokens
from .connections import runtime
from .errors import CommandError

__all__ = ["create_token", "list_tokens", "revoke_token"]


async def create_token(
    settings: Settings, role: str, name: str | None, expires_in_days: float
) -> int:
    chosen = AdminRole(role)
    now = datetime.now(UTC)
    label = (name or f"{chosen.value} {now:%Y-%m-%d}").strip()
    if not label or len(label) > 100:
        raise CommandError("--name: 1 to 100 characters", status=2)
    valid_for = timedelta(days=expires_in_days) if expires_in_days > 0 else None
    async with runtime(settings, with_broker=False, patience=0) as rt:
        made = await tokens.create_token(rt.admin, name=label, role=chosen, valid_for=valid_for)
    view = made.view
    expiry = view.expires_at.isoformat() if view.expires_at else "never"
    print(f"token {view.id} {view.name!r}: role {view.role.value}, expires {expiry}")
    print("Shown once, never stored: keep it secret (Authorization: Bearer <token>, or the")
    print(f"console's login at http://{settings.admin_host}:{settings.admin_port}/login).")
    print(made.token)
    return 0


async def list_tokens(settings: Settings) -> int:
    async with runtime(settings, with_broker=False, patience=0) as rt:
        found = await rt.admin.tokens()
    now = datetime.now(UTC)
    for view in found:
        expiry = f"{view.expires_at:%Y-%m-%d %H:%M}" if view.expires_at else "never"
        used = f"{view.last_used_at:%Y-%m-%d %H:%M}" if view.last_used_at else "never"
        print(
            f"{view.id:>4}  {view.role.value:<8}  {view.status(now):<7}  expires {expiry:<16}  "
            f"last used {used:<16}  {view.name}"
        )
    print(f"{len(found)} token(s)")
    return 0


async def revoke_token(settings: Settings, token_id: int) -> int:
    async with runtime(settings, with_broker=False, patience=0) as rt:
        before = await rt.admin.token(token_id)
        if before is None:
            raise CommandError(f"no token with id {token_id} (`scepline admin token list`)")
        view = await rt.admin.revoke_token(token_id)
    assert view is not None and view.revoked_at is not None
    if before.revoked_at is not None:
        print(
            f"token {view.id} {view.name!r} was revoked already, at {view.revoked_at.isoformat()}"
        )
    else:
        print(f"token {view.id} {view.name!r} revoked at {view.revoked_at.isoformat()}")
    return 0
