"""Alembic environment for the scepline state store.

Normally `scepline_shared.store.migrate` hands over an open connection (already
in a transaction and holding the migration lock) through
`config.attributes["connection"]`. Without one, e.g. for
`command.revision(alembic_config(url), autogenerate=True)`, the URL from the
config is used the same way.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from scepline_shared.store.migrate import run_locked
from scepline_shared.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode recreates tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url; use alembic_config(url)")
    asyncio.run(run_locked(url, run_migrations))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
