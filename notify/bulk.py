"""Hot-path statements run straight on the database driver's cursor.

The send engine writes a few rows per message (its status, an event, maybe a reset link) in
group transactions. Through SQLAlchemy's execution layer each of those statements costs
more Python time than the database's own work, and that time is taken from the event loop
that paces and talks to the providers (one GIL). A :class:`Statement` is compiled once per
dialect; executing it only converts each row's values with the column types' own bind
processors (so what is stored is exactly what SQLAlchemy would store) and hands the rows
to the driver's ``executemany``, inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, bindparam, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import TypeEngine

Processor = Callable[[Any], Any] | None


class _Compiled:
    """One statement in one dialect's SQL and parameter style."""

    def __init__(self, sql: str, types: Mapping[str, TypeEngine], dialect: Dialect) -> None:
        clause = text(sql).bindparams(
            *(bindparam(name, type_=type_) for name, type_ in types.items())
        )
        compiled = clause.compile(dialect=dialect)
        self.sql = compiled.string
        # qmark/format drivers take tuples in placeholder order; the others take dicts.
        self.order: tuple[str, ...] | None = (
            tuple(compiled.positiontup or ()) if compiled.positional else None
        )
        names = self.order if self.order is not None else tuple(compiled.binds)
        self.processors: dict[str, Processor] = {
            name: _processor(types.get(name), dialect) for name in names
        }

    def params(self, rows: Sequence[Mapping[str, Any]]) -> list:
        """The driver's parameters for ``rows``, each value converted by its type."""
        processors = self.processors

        def convert(name: str, value: Any) -> Any:
            proc = processors[name]
            return value if proc is None or value is None else proc(value)

        if self.order is None:
            return [{name: convert(name, row[name]) for name in processors} for row in rows]
        return [tuple([convert(name, row[name]) for name in self.order]) for row in rows]


def _processor(type_: TypeEngine | None, dialect: Dialect) -> Processor:
    if type_ is None:
        return None
    # The dialect's own implementation: e.g. SQLite stores DateTime as a formatted string.
    return type_.dialect_impl(dialect).bind_processor(dialect)


class Statement:
    """A fixed SQL text with ``:name`` parameters, for many rows at a time.

    ``types`` names the parameters that need conversion (times, JSON, booleans); the others
    go to the driver as they are (strings, integers, None).
    """

    def __init__(self, sql: str, **types: TypeEngine) -> None:
        self.source = sql
        self.types = types
        self._by_dialect: dict[str, _Compiled] = {}

    def _compiled(self, dialect: Dialect) -> _Compiled:
        key = f"{dialect.name}+{dialect.driver}"
        found = self._by_dialect.get(key)
        if found is None:
            found = self._by_dialect[key] = _Compiled(self.source, self.types, dialect)
        return found

    def execute(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Run the statement once per row in ``conn``'s transaction; rows changed in all."""
        if not rows:
            return 0
        dialect = conn.dialect
        compiled = self._compiled(dialect)
        params = compiled.params(rows)
        cursor = conn.connection.cursor()
        try:
            if len(params) == 1:
                cursor.execute(compiled.sql, params[0])
            else:
                cursor.executemany(compiled.sql, params)
            return cursor.rowcount
        except dialect.loaded_dbapi.Error as exc:
            # The same exception classes SQLAlchemy raises (OperationalError, ...), so callers
            # and the command line handle a failure here like any other database failure.
            raise DBAPIError.instance(
                compiled.sql,
                params,
                exc,
                dialect.loaded_dbapi.Error,
                hide_parameters=True,
                dialect=dialect,
                ismulti=len(params) > 1,
            ) from exc
        finally:
            cursor.close()


def insert_into(table: Table, *columns: str) -> Statement:
    """A plain INSERT of ``columns`` (default: all but an integer primary key) of ``table``,
    converting each value with its column's type."""
    names = columns or tuple(
        c.name for c in table.columns if not (c.primary_key and c.autoincrement)
    )
    sql = (
        f"INSERT INTO {table.name} ({', '.join(names)}) "
        f"VALUES ({', '.join(':' + n for n in names)})"
    )
    return Statement(sql, **{n: table.c[n].type for n in names})
