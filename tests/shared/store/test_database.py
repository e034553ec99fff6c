"""Database URLs, engines and sessions."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, text

from scepline_shared.store import (
    StoreError,
    UnsupportedDatabaseUrl,
    create_engine_for,
    normalise_database_url,
    session_factory,
)
from scepline_shared.store.database import SQLITE_BUSY_TIMEOUT_MS, autocommit_engine


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/scep", "postgresql+asyncpg://u:p@db:5432/scep"),
        ("postgres://u:p@db/scep", "postgresql+asyncpg://u:p@db/scep"),
        ("postgresql+asyncpg://u@db/scep", "postgresql+asyncpg://u@db/scep"),
        ("postgresql+psycopg://u@db/scep", "postgresql+psycopg://u@db/scep"),
        ("sqlite:///var/scepline.db", "sqlite+aiosqlite:///var/scepline.db"),
        ("sqlite:////abs/scepline.db", "sqlite+aiosqlite:////abs/scepline.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        # The rest of the URL is untouched, percent-encoding included.
        (
            "postgresql://u:p%40ss@db/scep?ssl=require",
            "postgresql+asyncpg://u:p%40ss@db/scep?ssl=require",
        ),
    ],
)
def test_normalise_database_url(given: str, expected: str) -> None:
    assert normalise_database_url(given) == expected


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:secret@db/scep",
        "postgresql+psycopg2://u:secret@db/scep",
        "sqlite+pysqlite:///x.db",
        "not a url secret",
    ],
)
def test_normalise_refuses_unsupported_urls_without_echoing_secrets(url: str) -> None:
    with pytest.raises(UnsupportedDatabaseUrl) as caught:
        normalise_database_url(url)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, StoreError)
    assert "secret" not in str(caught.value)


async def test_sqlite_engine_is_ready_for_several_processes(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        async with engine.connect() as connection:
            assert await connection.scalar(text("PRAGMA journal_mode")) == "wal"
            assert await connection.scalar(text("PRAGMA foreign_keys")) == 1
            assert await connection.scalar(text("PRAGMA busy_timeout")) == SQLITE_BUSY_TIMEOUT_MS
    finally:
        await engine.dispose()


async def test_sqlite_transactions_are_real(tmp_path: Path) -> None:
    # The driver's implicit-BEGIN quirks are switched off: a rolled-back DDL and
    # insert leave nothing behind.
    engine = create_engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        async with engine.connect() as connection:
            await connection.execute(text("CREATE TABLE t (x INTEGER)"))
            await connection.execute(text("INSERT INTO t VALUES (1)"))
            await connection.rollback()
            tables = await connection.scalar(
                text("SELECT count(*) FROM sqlite_master WHERE name = 't'")
            )
            assert tables == 0
    finally:
        await engine.dispose()


async def test_session_factory_keeps_values_after_commit(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        sessions = session_factory(engine)
        assert sessions.kw["expire_on_commit"] is False
    finally:
        await engine.dispose()


async def test_in_memory_sqlite_still_works() -> None:
    engine = create_engine_for("sqlite://")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (x INTEGER)"))
            await connection.execute(text("INSERT INTO t VALUES (1)"))
        async with engine.connect() as connection:
            assert await connection.scalar(text("SELECT x FROM t")) == 1
    finally:
        await engine.dispose()


async def test_autocommit_engine_shares_the_pool(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        assert autocommit_engine(engine).pool is engine.pool
    finally:
        await engine.dispose()


async def test_sqlite_autocommit_reads_leave_transactions_real(tmp_path: Path) -> None:
    # One pooled connection, used for an autocommit read and then a transaction:
    # the read must not switch the driver's own (implicit) BEGIN handling back on.
    engine = create_engine_for(f"sqlite:///{tmp_path / 'store.db'}", pool_size=1, max_overflow=0)
    try:
        async with autocommit_engine(engine).connect() as connection:
            await connection.execute(text("SELECT 1"))
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            assert raw.driver_connection.isolation_level is None  # type: ignore[union-attr]
            await connection.execute(text("CREATE TABLE t (x INTEGER)"))
            await connection.rollback()
            assert await connection.scalar(text("SELECT count(*) FROM sqlite_master")) == 0
    finally:
        await engine.dispose()


async def test_sqlite_autocommit_connections_take_no_write_lock(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    sent: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
    try:
        async with autocommit_engine(engine).connect() as connection:
            await connection.execute(text("SELECT 1"))
        assert sent == ["SELECT 1"]
        sent.clear()
        async with engine.begin() as connection:
            await connection.execute(text("SELECT 1"))
        assert sent == ["BEGIN IMMEDIATE", "SELECT 1"]
    finally:
        await engine.dispose()


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The common 022, so a file left to the umask would be readable by everyone."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
async def test_a_new_sqlite_store_and_its_wal_files_are_readable_by_the_owner_only(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    engine = create_engine_for(f"sqlite:///{path}")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (x BLOB)"))
        # -wal and -shm exist while a connection is open.
        async with engine.connect() as connection:
            await connection.execute(text("SELECT count(*) FROM t"))
            files = [path, path.with_name("store.db-wal"), path.with_name("store.db-shm")]
            assert {file.name: _mode(file) for file in files} == {
                file.name: 0o600 for file in files
            }
    finally:
        await engine.dispose()


@pytest.mark.usefixtures("permissive_umask")
async def test_an_existing_sqlite_store_readable_by_others_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    files = [path, path.with_name("store.db-wal"), path.with_name("store.db-shm")]
    for file in files:  # as an earlier version left them (SQLite recovers an empty -wal)
        file.touch()
        file.chmod(0o644)

    engine = create_engine_for(f"sqlite:///{path}")
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            assert {file.name: _mode(file) for file in files} == {
                file.name: 0o600 for file in files
            }
    finally:
        await engine.dispose()
