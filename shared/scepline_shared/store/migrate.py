"""Bring a database to the current schema, from any working directory.

No alembic.ini is read: the Alembic config is built here, pointing at the
`migrations/` directory inside this package, so an installed wheel migrates
as well as a checkout does. Every service may call `upgrade_to_head` at
start-up; concurrent callers are serialised (a PostgreSQL advisory lock, or
SQLite's write lock taken by BEGIN IMMEDIATE) and all but the first find
nothing to do.

    python -m scepline_shared.store upgrade postgresql://user@host/db
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from scepline_shared.store.database import create_engine_for, normalise_database_url

__all__ = [
    "MIGRATIONS_PATH",
    "alembic_config",
    "run_locked",
    "upgrade_to_head",
    "upgrade_to_head_sync",
]

MIGRATIONS_PATH = Path(__file__).resolve().with_name("migrations")

# Arbitrary, fixed: every scepline process must use the same key. Fits a signed bigint.
_PG_MIGRATION_LOCK_KEY = 0x5CE9_1111_0000_0001


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for this package's migrations (also for authoring revisions).

    With `url`, Alembic commands that open their own connection (e.g.
    `command.revision(cfg, autogenerate=True)`) use it.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_PATH))
    if url is not None:
        # ConfigParser interpolates '%', which URL-encoded passwords contain.
        config.set_main_option("sqlalchemy.url", normalise_database_url(url).replace("%", "%%"))
    return config


async def run_locked(url: str, work: Callable[[Connection], None]) -> None:
    """Run `work` on one connection, in one transaction, holding the migration lock.

    On PostgreSQL a transaction-scoped advisory lock is taken (DDL is
    transactional there, so the lock covers the whole upgrade and is released
    by the commit). On SQLite the engine starts every transaction with
    BEGIN IMMEDIATE, which already excludes every other writer.
    """
    engine = create_engine_for(url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY}
                )
            await connection.run_sync(work)
    finally:
        await engine.dispose()


async def upgrade_to_head(url: str) -> None:
    """Apply every pending migration to the database at `url`."""
    config = alembic_config()

    def upgrade(connection: Connection) -> None:
        # env.py picks the connection up from here instead of opening its own.
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    await run_locked(url, upgrade)


def upgrade_to_head_sync(url: str) -> None:
    """`upgrade_to_head` for synchronous callers (CLI, scripts); not from inside a loop."""
    asyncio.run(upgrade_to_head(url))
