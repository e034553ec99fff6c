"""Migrations: from empty, idempotent, concurrent, from any working directory."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from scepline_shared.store import create_engine_for, upgrade_to_head, upgrade_to_head_sync
from scepline_shared.store.migrate import MIGRATIONS_PATH, alembic_config, run_locked
from scepline_shared.store.models import Base

STORE_TABLES = {
    "scep_request",
    "request_event",
    "certificate",
    "crl",
    "issuance_journal",
    "refusal",
    "admin_token",
    "admin_action",
    "intune_status",
    "one_time_challenge",
}


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def schema(url: str) -> tuple[set[str], str | None]:
    """Tables present and the recorded Alembic revision."""
    engine = create_engine_for(url)
    try:
        async with engine.connect() as connection:
            tables = set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
            version = None
            if "alembic_version" in tables:
                version = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    finally:
        await engine.dispose()
    return tables, version


async def test_upgrade_from_empty_creates_every_table(empty_database_url: str) -> None:
    assert await schema(empty_database_url) == (set(), None)

    await upgrade_to_head(empty_database_url)

    tables, version = await schema(empty_database_url)
    assert tables == STORE_TABLES | {"alembic_version"}
    assert version == head_revision()


async def test_upgrade_twice_is_a_no_op(database_url: str) -> None:
    before = await schema(database_url)
    await upgrade_to_head(database_url)
    assert await schema(database_url) == before


async def test_models_and_migrations_agree(database_url: str) -> None:
    engine = create_engine_for(database_url)

    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(differences) == []
    finally:
        await engine.dispose()


async def test_downgrade_to_base_and_back(database_url: str) -> None:
    config = alembic_config()

    def downgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    await run_locked(database_url, downgrade)
    tables, _ = await schema(database_url)
    assert tables.isdisjoint(STORE_TABLES)

    await upgrade_to_head(database_url)
    assert (await schema(database_url))[1] == head_revision()


async def test_concurrent_upgrades_in_one_process(empty_database_url: str) -> None:
    await asyncio.gather(*(upgrade_to_head(empty_database_url) for _ in range(5)))
    assert (await schema(empty_database_url))[1] == head_revision()


def test_sync_upgrade(empty_database_url: str) -> None:
    upgrade_to_head_sync(empty_database_url)
    assert asyncio.run(schema(empty_database_url))[1] == head_revision()


async def test_parallel_processes_migrate_from_another_directory(
    empty_database_url: str,
) -> None:
    # What several services starting at once do: no alembic.ini, cwd elsewhere.
    plain_url = empty_database_url.replace("+asyncpg", "").replace("+aiosqlite", "")
    snippet = (
        "import sys\n"
        "from scepline_shared.store.migrate import upgrade_to_head_sync\n"
        "upgrade_to_head_sync(sys.argv[1])\n"
    )
    commands = [[sys.executable, "-c", snippet, plain_url] for _ in range(2)]
    commands.append([sys.executable, "-m", "scepline_shared.store", "upgrade", plain_url])
    processes = [
        await asyncio.create_subprocess_exec(
            *cmd, cwd="/tmp", stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for cmd in commands
    ]
    outcomes = []
    for process in processes:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
        outcomes.append((process.returncode, stderr.decode()))

    assert [rc for rc, _ in outcomes] == [0, 0, 0], outcomes
    assert not any("Warning" in err for _, err in outcomes), outcomes
    tables, version = await schema(empty_database_url)
    assert tables == STORE_TABLES | {"alembic_version"}
    assert version == head_revision()


def test_migrations_ship_inside_the_package() -> None:
    assert (MIGRATIONS_PATH / "env.py").is_file()
    assert MIGRATIONS_PATH.parent.name == "store"


async def test_journal_entries_survive_0005_and_the_journal_stays_append_only(
    empty_database_url: str,
) -> None:
    """0005 widens the journal's kinds; on SQLite that copies the table, whose
    triggers must come back."""
    config = alembic_config()

    def upgrade(revision: str) -> Callable[[Connection], None]:
        def run(connection: Connection) -> None:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

        return run

    await run_locked(empty_database_url, upgrade("0004"))
    row = (
        "INSERT INTO issuance_journal (at, kind, issuer_key_id, issuer, serial, tbs_sha256, "
        "subject, not_before, not_after) VALUES ('2026-12-06 00:00:00+00:00', '{kind}', "
        "'{key}', 'CN=CA', '{serial}', '{key}', 'CN=x', '2026-12-06 00:00:00+00:00', "
        "'2027-12-06 00:00:00+00:00')"
    )
    engine = create_engine_for(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(row.format(kind="crl", key="a" * 64, serial="1")))
        await upgrade_to_head(empty_database_url)
        async with engine.begin() as connection:
            await connection.execute(
                text(row.format(kind="ocsp-certificate", key="b" * 64, serial="2"))
            )
        async with engine.connect() as connection:
            kinds = (await connection.execute(text("SELECT kind FROM issuance_journal"))).all()
        assert sorted(kind for (kind,) in kinds) == ["crl", "ocsp-certificate"]
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as connection:
                await connection.execute(text("DELETE FROM issuance_journal"))
    finally:
        await engine.dispose()
