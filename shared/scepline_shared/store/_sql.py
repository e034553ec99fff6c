"""How the repository reaches the database; the one place that knows the dialect.

Round trips dominate the store's cost, so every call makes as few as possible:

- Reads and single-statement writes run on an *autocommit* connection: one
  round trip, no BEGIN/COMMIT. A single statement is atomic on its own. (On
  SQLite this also means a read does not take the write lock.)
- A change to one `scep_request` row that brings dependent rows along (its
  history event, an issued certificate) must be all or nothing:
  - PostgreSQL: one statement, `WITH changed AS (UPDATE|INSERT ... RETURNING ...),
    insert_0 AS (INSERT ... SELECT ... FROM changed), ... SELECT * FROM changed`,
    in autocommit; the dependent rows are inserted only if the change returned a row.
  - SQLite (no data-modifying CTEs): BEGIN IMMEDIATE, the change, the inserts, COMMIT.

Statements are SQLAlchemy Core, built once with bound parameters and reused:
building and cache-keying a statement costs more CPU than executing it.

On PostgreSQL through asyncpg, a statement built once (`reusable`, and every
`RequestChange`) is also *run* without SQLAlchemy's execution machinery: it is
compiled once to its SQL text (`$n` placeholders, the parameters' order, the
bind and result processors of its column types), and each call takes a
connection from the engine's own pool and runs the text on the asyncpg
connection directly (asyncpg prepares it once per connection). SQLAlchemy's
Connection/cursor/Result layers cost about 0.2 ms of CPU per statement, ten
times asyncpg's own work, and a pipelined request runs about ten statements.
Parameters and rows go through the same type processors SQLAlchemy would
apply (aware UTC datetimes, StrEnum columns), and errors come out as
SQLAlchemy's (`IntegrityError` for a constraint), so callers see no difference.

This path leans on SQLAlchemy beyond its everyday API: the compiler's
positional parameters (`positiontup`, `binds`, `post_compile_params`,
`literal_execute_params`, described in its "Core Internals" reference),
`sqlalchemy.util.greenlet_spawn` (not public) to check a pooled connection out
and back in from async code, and the asyncpg adapter's behaviour that a
connection invalidated outside a greenlet is terminated without waiting.
SQLAlchemy is therefore pinned below its next minor release, and
`tests/shared/test_library_internals.py` fails if any of these changes. What it
buys, measured: docs/performance.md, "Library internals".
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Column, Executable, Insert, Row, Table, bindparam, exc, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql.dml import ReturningInsert, ReturningUpdate
from sqlalchemy.util import greenlet_spawn

from scepline_shared.store.database import autocommit_engine

__all__ = ["Database", "Dependent", "RequestChange", "bound_engine", "reusable"]

_S = TypeVar("_S", bound=Executable)

# Statements built once and kept (module constants): only these get compiled
# to raw SQL and cached, so a statement built per call cannot grow the cache.
_REUSABLE: weakref.WeakSet[Executable] = weakref.WeakSet()


def bound_engine(sessions: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    """The engine a repository's sessionmaker is bound to (statements run on it directly)."""
    engine = sessions.kw.get("bind")
    if not isinstance(engine, AsyncEngine):
        raise TypeError("the repository needs an async_sessionmaker bound to an AsyncEngine")
    return engine


def reusable(statement: _S) -> _S:
    """Mark a statement that is built once and reused (see the module docstring)."""
    _REUSABLE.add(statement)
    return statement


# A row inserted along with a request change: its table, and for each column
# either the name of the parameter holding its value or a `scep_request`
# column, standing for that column's value in the changed row.
Dependent = tuple[Table, Mapping[str, "str | Column[Any]"]]


@dataclass(frozen=True, eq=False)
class RequestChange:
    """A parameterised write of one `scep_request` row and its dependent rows.

    `change` is an INSERT or UPDATE returning at most one row; `dependents`
    are inserted if (and only if) it returned one. Build each shape once and
    reuse it: `Database` compiles it for its dialect on first use.
    """

    change: ReturningInsert[Any] | ReturningUpdate[Any]
    dependents: tuple[Dependent, ...]


Processor = Callable[[Any], Any]


@dataclass(frozen=True, eq=False)
class _Raw:
    """One statement compiled for asyncpg: its text and how to fill and read it."""

    sql: str
    # Per placeholder ($1, $2, ...): the parameter's name and its bind processor,
    # or (None, value) for a constant SQLAlchemy bound itself (`attempts + 1`).
    binds: tuple[tuple[str | None, Any, Processor | None], ...]
    # (index, result processor) of each result column that has one; the others
    # are taken as asyncpg gives them.
    results: tuple[tuple[int, Processor], ...]

    def arguments(self, parameters: Mapping[str, Any] | None) -> list[Any]:
        given = parameters or {}
        arguments = []
        for name, constant, process in self.binds:
            if name is None:
                value = constant
            else:
                try:
                    value = given[name]
                except KeyError:
                    raise exc.ArgumentError(f"a value is required for parameter {name!r}") from None
            arguments.append(value if process is None or value is None else process(value))
        return arguments

    def row(self, record: Sequence[Any]) -> Sequence[Any]:
        if not self.results:
            return record
        values = list(record)
        for index, process in self.results:
            value = values[index]
            if value is not None:
                values[index] = process(value)
        return values


# What a broken connection raises (asyncpg's InterfaceError covers "connection
# is closed" and "another operation is in progress").
_CONNECTION_FAILURES: tuple[type[BaseException], ...] = (OSError, TimeoutError)


def _changed_param(column: str) -> str:
    """The SQLite path's parameter for a column of the changed row."""
    return f"changed_{column}"


class Database:
    """Statement execution for the repositories, over one engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._autocommit = autocommit_engine(engine)
        self._single_statement = engine.dialect.name == "postgresql"
        self._dialect_insert = (
            postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        )
        self._compiled: dict[RequestChange, Executable | tuple[Executable, ...]] = {}
        # SQLite has one writer at a time, and a connection that finds the lock
        # taken sleeps in SQLite's busy handler (1, 2, 5, 10... ms at a time,
        # whether or not the lock came free meanwhile). Writers take turns here
        # first instead: one per process (an asyncio lock), and one among the
        # processes sharing the file (a lock file the kernel hands over the
        # moment it is released), so none sleeps in SQLite.
        self._write_turn: asyncio.Lock | None = None
        self._lock_file: Path | None = None
        self._lock_descriptor: int | None = None
        if engine.dialect.name == "sqlite":
            self._write_turn = asyncio.Lock()
            database = engine.url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                self._lock_file = Path(f"{database}.write-lock")
        self._asyncpg = engine.dialect.name == "postgresql" and engine.dialect.driver == "asyncpg"
        self._raw: dict[Executable, _Raw] = {}
        if self._asyncpg:
            import asyncpg

            self._driver = asyncpg
            self._connection_failures = (
                *_CONNECTION_FAILURES,
                asyncpg.InterfaceError,
                asyncpg.PostgresConnectionError,
            )

    # -- raw asyncpg path ---------------------------------------------------

    def _raw_for(self, statement: Executable) -> _Raw | None:
        """The compiled form of a reusable statement on asyncpg, else None."""
        if not self._asyncpg:
            return None
        raw = self._raw.get(statement)
        if raw is None and statement in _REUSABLE:
            raw = self._raw[statement] = self._compile_raw(statement)
        return raw

    def _compile_raw(self, statement: Executable) -> _Raw:
        dialect = self.engine.dialect
        compiled = statement.compile(dialect=dialect)
        if (
            not compiled.positional
            or compiled.positiontup is None
            or compiled.post_compile_params
            or compiled.literal_execute_params
        ):
            raise ValueError(f"statement cannot run on asyncpg directly: {statement}")
        binds = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required:
                binds.append((bind.key, None, process))
            else:
                binds.append((None, bind.effective_value, process))
        # A SELECT's columns, or a write's RETURNING columns (none without one).
        columns = getattr(statement, "exported_columns", ())
        processors = (
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        )
        results = tuple((i, process) for i, process in enumerate(processors) if process is not None)
        return _Raw(str(compiled), tuple(binds), results)

    async def _run_raw(
        self,
        raw: _Raw,
        parameters: Mapping[str, Any] | None,
        run: Callable[[Any, str, list[Any]], Any],
    ) -> Any:
        """`run(connection, sql, arguments)` on an asyncpg connection from the pool."""
        arguments = raw.arguments(parameters)
        pool = self.engine.sync_engine.pool
        fairy = await greenlet_spawn(pool.connect)
        healthy = False
        try:
            result = await run(fairy.driver_connection, raw.sql, arguments)
            healthy = True
            return result
        except self._driver.IntegrityConstraintViolationError as error:
            healthy = True
            raise exc.IntegrityError(raw.sql, arguments, error) from error
        except self._driver.PostgresError as error:
            healthy = not isinstance(error, self._driver.PostgresConnectionError)
            raise exc.DatabaseError(raw.sql, arguments, error) from error
        except self._connection_failures as error:
            raise exc.OperationalError(raw.sql, arguments, error) from error
        finally:
            if not healthy:
                # Broken, or cancelled mid-statement: never hand it out again.
                # (Outside a greenlet, SQLAlchemy terminates it without waiting.)
                fairy.invalidate()
            await greenlet_spawn(fairy.close)

    # -- statements -----------------------------------------------------------

    async def fetch_one(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Row[Any] | None:
        """The first row of one statement (a SELECT, or a write with RETURNING), autocommit."""
        raw = self._raw_for(statement)
        if raw is not None:
            record = await self._run_raw(raw, parameters, _fetchrow)
            return None if record is None else raw.row(record)  # type: ignore[return-value]
        async with self._turn_for(statement), self._autocommit.connect() as connection:
            result = await connection.execute(statement, parameters)
            return result.first()

    async def fetch_all(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        raw = self._raw_for(statement)
        if raw is not None:
            records = await self._run_raw(raw, parameters, _fetch)
            return [raw.row(record) for record in records]  # type: ignore[misc]
        async with self._turn_for(statement), self._autocommit.connect() as connection:
            result = await connection.execute(statement, parameters)
            return result.all()

    async def rowcount(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> int:
        """Rows one write touched, autocommit."""
        raw = self._raw_for(statement)
        if raw is not None:
            status = await self._run_raw(raw, parameters, _execute)
            return int(status.rsplit(" ", 1)[-1])  # "UPDATE 1"
        async with self._turn_for(statement), self._autocommit.connect() as connection:
            result = await connection.execute(statement, parameters)
            return int(result.rowcount)  # type: ignore[attr-defined]

    def insert_unless_present(self, table: Table, key: str) -> Insert:
        """`INSERT ... ON CONFLICT (key) DO NOTHING`: a duplicate neither inserts nor raises."""
        return self._dialect_insert(table).on_conflict_do_nothing(index_elements=[key])

    async def change_request(
        self, change: RequestChange, parameters: Mapping[str, Any]
    ) -> Row[Any] | None:
        """Run `change` with `parameters`, atomically; the changed row, or None
        (then nothing was written)."""
        compiled = self._compiled.get(change)
        if compiled is None:
            compiled = self._compiled[change] = self._compile(change)
            if isinstance(compiled, Executable):
                reusable(compiled)
        if isinstance(compiled, Executable):  # one statement (PostgreSQL), autocommit
            return await self.fetch_one(compiled, parameters)
        first, *then = compiled
        async with self.transaction() as connection:
            row = (await connection.execute(first, parameters)).first()
            if row is None:
                return None
            with_row = {**parameters}
            with_row.update((_changed_param(key), value) for key, value in row._mapping.items())
            for statement in then:
                await connection.execute(statement, with_row)
            return row

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite, after this process's
        other writers)."""
        async with self._writing(), self.engine.begin() as connection:
            yield connection

    def _turn_for(self, statement: Executable) -> contextlib.AbstractAsyncContextManager[None]:
        """A single statement that writes takes its turn too (it is a transaction)."""
        if self._write_turn is not None and getattr(statement, "is_dml", False):
            return self._writing()
        return contextlib.nullcontext()

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[None]:
        if self._write_turn is None:
            yield
            return
        async with self._write_turn:
            if self._lock_file is None:
                yield
                return
            if self._lock_descriptor is None:
                self._lock_descriptor = os.open(self._lock_file, os.O_RDWR | os.O_CREAT, 0o600)
            descriptor = self._lock_descriptor
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another process writes: wait off the loop
                await asyncio.to_thread(fcntl.flock, descriptor, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(descriptor, fcntl.LOCK_UN)

    def _compile(self, change: RequestChange) -> Executable | tuple[Executable, ...]:
        if self._single_statement:
            changed = change.change.cte("changed")
            inserts = [
                insert(table)
                .from_select(
                    list(values),
                    select(
                        *(
                            changed.c[value.name]
                            if isinstance(value, Column)
                            else bindparam(value, type_=table.c[name].type)
                            for name, value in values.items()
                        )
                    ).select_from(changed),
                )
                .cte(f"insert_{index}")
                for index, (table, values) in enumerate(change.dependents)
            ]
            return select(*changed.c).add_cte(*inserts)
        return (
            change.change,
            *(
                insert(table).values(
                    {
                        name: bindparam(_changed_param(value.name), type_=value.type)
                        if isinstance(value, Column)
                        else bindparam(value, type_=table.c[name].type)
                        for name, value in values.items()
                    }
                )
                for table, values in change.dependents
            ),
        )


async def _fetchrow(connection: Any, sql: str, arguments: list[Any]) -> Any:
    return await connection.fetchrow(sql, *arguments)


async def _fetch(connection: Any, sql: str, arguments: list[Any]) -> Any:
    return await connection.fetch(sql, *arguments)


async def _execute(connection: Any, sql: str, arguments: list[Any]) -> Any:
    return await connection.execute(sql, *arguments)
