"""Engines and sessions for the state store (PostgreSQL or SQLite).

Nothing here runs at import: engines are built by whoever owns the process
(`main()` or a lifespan) and passed down.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from scepline_shared.private_files import create_private_file, keep_private
from scepline_shared.store.errors import UnsupportedDatabaseUrl

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "autocommit_engine",
    "create_engine_for",
    "normalise_database_url",
    "session_factory",
]

# How long a SQLite writer waits for another process's lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 30_000

# Drivers we run on, per dialect; the first is what a bare scheme gets.
_ASYNC_DRIVERS: dict[str, tuple[str, ...]] = {
    "postgresql": ("asyncpg", "psycopg", "psycopg_async"),
    "sqlite": ("aiosqlite",),
}
_DIALECT_ALIASES = {"postgres": "postgresql", "postgresql": "postgresql", "sqlite": "sqlite"}

# Execution option telling the SQLite "begin" hook not to open a transaction.
_SQLITE_AUTOCOMMIT = "scepline_sqlite_autocommit"


def normalise_database_url(url: str) -> str:
    """Turn a plain database URL into the async-driver form SQLAlchemy needs.

    `postgres://` and `postgresql://` become `postgresql+asyncpg://`,
    `sqlite:///x` becomes `sqlite+aiosqlite:///x`; URLs that already name an
    async driver are returned unchanged. String surgery on the scheme only,
    so the rest of the URL (passwords, query) stays byte-for-byte intact.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise UnsupportedDatabaseUrl("<none>")
    dialect_name, _, driver = scheme.lower().partition("+")
    dialect = _DIALECT_ALIASES.get(dialect_name)
    if dialect is None:
        raise UnsupportedDatabaseUrl(scheme)
    drivers = _ASYNC_DRIVERS[dialect]
    if not driver:
        return f"{dialect}+{drivers[0]}://{rest}"
    if driver not in drivers:
        # A sync driver (psycopg2, pysqlite) would block the event loop.
        raise UnsupportedDatabaseUrl(scheme)
    return f"{dialect}+{driver}://{rest}"


def create_engine_for(
    url: str,
    *,
    pool_size: int = 8,
    max_overflow: int = 4,
    pool_timeout: float = 10.0,
    echo: bool = False,
) -> AsyncEngine:
    """An async engine for `url`, tuned for several processes sharing one store.

    Pooling applies to PostgreSQL (and file SQLite). A process opens
    connections on demand, up to `pool_size + max_overflow`, and keeps them:
    SQLAlchemy would close an overflow connection as soon as it came back
    while `pool_size` others sat idle, so a load hovering around `pool_size`
    would open and close connections (a server process each) all the time.
    A caller that finds them all busy waits up to `pool_timeout` seconds.

    SQLite also gets WAL, foreign keys, a busy timeout and `BEGIN IMMEDIATE`
    transactions (see `_prepare_sqlite`), and its files are its owner's only
    (see `_keep_sqlite_files_private`).
    """
    pool_args: dict[str, Any] = {
        "pool_size": pool_size + max_overflow,
        "max_overflow": 0,
        "pool_timeout": pool_timeout,
    }
    normalised = normalise_database_url(url)
    if normalised.startswith("sqlite"):
        in_memory = _is_memory_database(make_url(normalised))
        if not in_memory:
            _keep_sqlite_files_private(Path(make_url(normalised).database or ""))
        # :memory: must keep SQLAlchemy's StaticPool (one connection, one database).
        engine = create_async_engine(normalised, echo=echo, **({} if in_memory else pool_args))
        _prepare_sqlite(engine, wal=not in_memory)
        return engine
    return create_async_engine(
        normalised,
        echo=echo,
        **pool_args,
        # No pre-ping: it costs a round trip on every checkout. A connection the
        # server dropped fails once, SQLAlchemy then invalidates the whole pool,
        # and the caller's retry (worker redelivery, client resend) succeeds.
        pool_recycle=1800,
    )


def autocommit_engine(engine: AsyncEngine) -> AsyncEngine:
    """`engine` (same pool) with connections that open no transaction.

    Each statement commits on its own: a read or a single-statement write is
    one round trip instead of BEGIN, statement, COMMIT/ROLLBACK. Only for work
    that is one statement, or that needs no atomicity across statements.

    On PostgreSQL this is the AUTOCOMMIT isolation level. On SQLite, whose
    driver-level transaction handling is already off (see `_prepare_sqlite`),
    the BEGIN IMMEDIATE is skipped, so a read does not take the write lock.
    (Not isolation_level="AUTOCOMMIT" there: SQLAlchemy would hand the
    connection back with the driver's implicit BEGIN switched on again.)
    """
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{_SQLITE_AUTOCOMMIT: True})
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose loaded values survive commit (no lazy reload in async code)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def _prepare_sqlite(engine: AsyncEngine, *, wal: bool) -> None:
    """Make a SQLite file safe to share between processes.

    - WAL: readers do not block the writer and vice versa.
    - busy_timeout: a writer waits for another process's lock instead of failing.
    - foreign_keys: off by default in SQLite.
    - The driver's own BEGIN handling is switched off and every transaction
      starts with BEGIN IMMEDIATE. A deferred transaction that reads and then
      writes can fail at once with SQLITE_BUSY when another connection wrote
      in between, and busy_timeout cannot help it; taking the write lock up
      front turns that into a wait. It also makes migrations transactional.
      Connections of `autocommit_engine` skip it: each statement is then its
      own implicit transaction, as SQLite does without a BEGIN.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if wal:
                _switch_to_wal(cursor)
                # synchronous stays FULL: a commit that vanished on power loss
                # could let a redelivered sign message issue a second certificate.
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Autocommit connections (`autocommit_engine`) take no lock at all.
        options = connection.get_execution_options()
        if options.get(_SQLITE_AUTOCOMMIT) or options.get("isolation_level") == "AUTOCOMMIT":
            return
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _switch_to_wal(cursor: Any) -> None:
    """WAL is a property of the database file: set once, every later connection
    finds it. Switching needs the file to itself and SQLite answers "database
    is locked" at once (no busy handler) while another connection is in it, as
    when several processes start on a new file together: wait and retry."""
    cursor.execute("PRAGMA journal_mode")
    if str(cursor.fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as error:  # the driver's OperationalError, through the adapter
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _keep_sqlite_files_private(database: Path) -> None:
    """The database file exists, mode 0600, before SQLite first opens it: SQLite
    gives its -wal, -shm and -journal files the database file's permissions, and
    they hold every request it recorded. Files left readable by others are
    tightened. Where the directory is missing SQLite reports it."""
    if not database.parent.is_dir():
        return
    create_private_file(database)
    for suffix in ("-wal", "-shm", "-journal"):
        keep_private(database.with_name(database.name + suffix))


def _is_memory_database(url: URL) -> bool:
    database = url.database
    return not database or database == ":memory:" or url.query.get("mode") == "memory"
