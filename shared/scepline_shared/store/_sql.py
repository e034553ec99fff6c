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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Executable, Insert, Row, Table, bindparam, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import ReturningInsert, ReturningUpdate

from scepline_shared.store.database import autocommit_engine

__all__ = ["Database", "Dependent", "RequestChange"]

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

    async def fetch_one(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Row[Any] | None:
        """The first row of one statement (a SELECT, or a write with RETURNING), autocommit."""
        async with self._autocommit.connect() as connection:
            result = await connection.execute(statement, parameters)
            return result.first()

    async def fetch_all(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        async with self._autocommit.connect() as connection:
            result = await connection.execute(statement, parameters)
            return result.all()

    async def rowcount(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> int:
        """Rows one write touched, autocommit."""
        async with self._autocommit.connect() as connection:
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
            async with self._autocommit.connect() as connection:
                result = await connection.execute(compiled, parameters)
                return result.first()
        first, *then = compiled
        async with self.engine.begin() as connection:
            row = (await connection.execute(first, parameters)).first()
            if row is None:
                return None
            with_row = {**parameters}
            with_row.update((_changed_param(key), value) for key, value in row._mapping.items())
            for statement in then:
                await connection.execute(statement, with_row)
            return row

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
