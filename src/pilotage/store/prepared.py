"""Statements of the hot paths, run on the database driver's own cursor.

SQLAlchemy's execution of a Core statement (its cache look-up, the parameters' and the
rows' processing, its result objects) costs several times what SQLite takes to run it,
and as much again as psycopg on PostgreSQL. A :class:`Prepared` statement is a Core
statement compiled once per dialect into its SQL text, the order of its parameters and
the processors of its parameters and columns (SQLite's booleans, say); it then runs on
the driver's cursor of the connection's own transaction: the same SQL, in the same
transaction, as SQLAlchemy would have sent. A driver's error propagates unwrapped
(``pilotage.store.faults`` classifies the drivers' errors as it does SQLAlchemy's), and
the engine's statement observers (the metrics' timer) are told of each statement as of
any other.

Only what the hot paths use is supported: bound parameters given by name, no expanding
``IN``, ``RETURNING`` as written in the statement.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler


def _row_type(fields: tuple[str, ...]) -> type[Any]:
    """Rows whose columns are also attributes, as SQLAlchemy's rows are."""
    base = collections.namedtuple("Row", fields, rename=True)  # type: ignore[misc]

    class Row(base):
        __slots__ = ()

        @property
        def _mapping(self) -> dict[str, Any]:
            return dict(self._asdict())

    return Row


class _Compiled:
    """One statement for one dialect."""

    __slots__ = (
        "columns", "defaults", "dialect", "names", "positional", "processors", "row",
        "row_processors", "sql",
    )  # fmt: skip

    def __init__(self, statement: sa.ClauseElement, dialect: sa.Dialect, keys: Sequence[str]):
        compiled = statement.compile(dialect=dialect, column_keys=list(keys) or None)
        assert isinstance(compiled, SQLCompiler)
        if any(bind.expanding for bind in compiled.bind_names):
            raise ValueError("a prepared statement takes plain bound parameters only")
        self.dialect = dialect
        self.sql: str = compiled.string
        self.positional: bool = compiled.positional
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        # Parameters the statement itself gives (a literal compared with), and the
        # processors of every parameter the dialect converts.
        self.defaults: dict[str, Any] = {}
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for bind, name in compiled.bind_names.items():
            if not bind.required and bind.callable is None:
                self.defaults[name] = bind.effective_value
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[name] = processor
        self.columns: list[Any] = []
        if getattr(statement, "_returning", ()):
            self.columns = list(statement.exported_columns)  # type: ignore[attr-defined]
        else:
            self.columns = list(getattr(statement, "selected_columns", ()) or ())
        self.row: type[Any] | None = (
            _row_type(tuple(str(c.key) for c in self.columns)) if self.columns else None
        )
        #: Set at the first row, from the driver's column types (PostgreSQL's numbers).
        self.row_processors: list[Callable[[Any], Any] | None] | None = None

    def parameters(self, given: Mapping[str, Any]) -> Any:
        values = {**self.defaults, **given} if self.defaults else dict(given)
        for name, processor in self.processors.items():
            if name in values:
                values[name] = processor(values[name])
        if self.positional:
            return tuple(values[name] for name in self.names)
        return values

    def make_row(self, values: Sequence[Any], cursor: Any) -> Any:
        assert self.row is not None, "the statement returns no rows"
        processors = self.row_processors
        if processors is None:  # once: a driver may build its description on demand
            processors = self.row_processors = [
                c.type.dialect_impl(self.dialect).result_processor(self.dialect, d[1])
                for c, d in zip(self.columns, cursor.description, strict=True)
            ]
        if any(processors):
            pairs = zip(processors, values, strict=True)
            values = [v if p is None or v is None else p(v) for p, v in pairs]
        return self.row(*values)


class Prepared:
    """A Core statement run on the driver's cursor (see the module's docstring).

    ``keys`` are an INSERT's columns (those its parameters give, in any order).
    """

    def __init__(self, statement: sa.ClauseElement, keys: Sequence[str] = ()) -> None:
        self.statement = statement
        self.keys = tuple(keys)
        self._compiled: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def _for(self, dialect: sa.Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.setdefault(
                    dialect.name, _Compiled(self.statement, dialect, self.keys)
                )
        return compiled

    def run(self, conn: sa.Connection, params: Mapping[str, Any]) -> Any:
        """Run the statement in ``conn``'s transaction; the driver's cursor, executed."""
        compiled = self._for(conn.dialect)
        parameters = compiled.parameters(params)
        driver = conn.connection.driver_connection
        assert driver is not None
        cursor = driver.cursor()
        dispatch = conn.dispatch
        if dispatch.before_cursor_execute:
            dispatch.before_cursor_execute(conn, cursor, compiled.sql, parameters, None, False)
        cursor.execute(compiled.sql, parameters)
        if dispatch.after_cursor_execute:
            dispatch.after_cursor_execute(conn, cursor, compiled.sql, parameters, None, False)
        return cursor

    def rowcount(self, conn: sa.Connection, params: Mapping[str, Any]) -> int:
        """Run it; how many rows it changed."""
        cursor = self.run(conn, params)
        count = int(cursor.rowcount)
        cursor.close()
        return count

    def first(self, conn: sa.Connection, params: Mapping[str, Any]) -> Any:
        """Run it; its first row (the others are not read), or None."""
        compiled = self._for(conn.dialect)
        cursor = self.run(conn, params)
        values = cursor.fetchone()
        row = None if values is None else compiled.make_row(values, cursor)
        cursor.close()
        return row
