"""Hot statements, compiled once and run on SQLite's driver directly.

Running a small statement through SQLAlchemy costs ~0.1-0.3 ms of Python (cache key, compiled
cache lookup, execution context, parameter and result processing), ten to fifty times what
SQLite itself spends on it. On the hot paths (a live session's segments, its webhook flush, the
proactive claim and its reads, traces) that was most of the event loop's time. A
:class:`Statement` wraps a statement built once at import; on SQLite it is compiled once, its SQL
expanded once per combination of lengths of its ``IN`` lists, and executed on the ``sqlite3``
connection with the bind and result processing SQLAlchemy would apply (JSON, booleans). Only
SQLAlchemy's public API is used: the compiled SQL, its positional parameters and binds, the
expanded SQL from ``construct_expanded_state``, the result columns from ``exported_columns`` and
the types' own bind and result processors; the rows are named as the driver names the columns
(as SQLAlchemy does: ``count_1`` for an unlabeled ``count()``).
On PostgreSQL (and on aiosqlite) it runs through SQLAlchemy as usual: there the round trip to
the server, not Python, is the cost.

Rows come back as named tuples (``row.id``, ``row[0]``), like SQLAlchemy's rows.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, bindparam, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

SQL_CACHE = 1024  # rendered SQL strings kept per statement (one per combination of list lengths)


@dataclass(frozen=True)
class _Compiled:
    compiled: Any  # SQLAlchemy's compiled statement (it expands the IN lists)
    names: tuple[str, ...]  # the parameters in positional order
    defaults: Mapping[str, Any]  # values bound in the statement itself
    expanding: tuple[str, ...]  # the expanding IN lists, in order
    bind: Mapping[str, Callable[[Any], Any]]
    results: tuple[Callable[[Any], Any] | None, ...]


class Statement:
    """A statement built once, run through the driver on SQLite (see the module docstring)."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: _Compiled | None = None
        self._sql: dict[tuple[int, ...], str] = {}
        self._row: Callable[..., Any] | None = None  # named tuple of the result columns

    def rows(self, conn: Connection, params: Mapping[str, Any] | None = None) -> list[Any]:
        """The result rows (a SELECT, or a write with RETURNING)."""
        if not _on_driver(conn):
            return list(conn.execute(self.statement, params or {}).all())
        compiled = self._compile(conn)
        sql, values = self._bound(compiled, params or {})
        cursor = _execute(conn, sql, values)
        raw = cursor.fetchall()
        if cursor.description is None:
            return raw
        if self._row is None:
            self._row = _row_type(cursor.description, compiled)
        if any(compiled.results):
            raw = [
                [v if f is None or v is None else f(v) for f, v in zip(compiled.results, r)]
                for r in raw
            ]
        return [self._row(*r) for r in raw]

    def run(self, conn: Connection, params: Mapping[str, Any] | None = None) -> int:
        """Execute a write; returns the number of rows it changed."""
        if not _on_driver(conn):
            return int(conn.execute(self.statement, params or {}).rowcount or 0)
        return int(_execute(conn, *self._bound(self._compile(conn), params or {})).rowcount)

    def run_many(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> None:
        """Execute a write once per parameter set (``executemany``); no expanding lists."""
        if not params:
            return
        if not _on_driver(conn):
            conn.execute(self.statement, list(params))
            return
        compiled = self._compile(conn)
        sql = self._sql_for(compiled, {})
        _execute(conn, sql, [self._values(compiled, p) for p in params], many=True)

    def _compile(self, conn: Connection) -> _Compiled:
        if self._compiled is not None:
            return self._compiled
        dialect = conn.dialect
        compiled: Any = cast(Any, self.statement).compile(dialect=dialect)
        # Literal parameters and Python-side column defaults are SQLAlchemy's execution's work.
        late = compiled.literal_execute_params or compiled.insert_prefetch
        if late or compiled.update_prefetch or dialect.paramstyle != "qmark":
            raise ValueError(f"Statement cannot run on the driver: {self.statement}")
        names = tuple(compiled.positiontup or ())
        binds = {name: compiled.binds[name] for name in names}
        bind = {
            name: b.type.dialect_impl(dialect).bind_processor(dialect) for name, b in binds.items()
        }
        columns = getattr(self.statement, "exported_columns", ())  # a SELECT's, or RETURNING
        self._compiled = _Compiled(
            compiled=compiled,
            names=names,
            defaults={
                name: b.effective_value
                for name, b in binds.items()
                if b.value is not None or not b.required
            },
            expanding=tuple(dict.fromkeys(name for name, b in binds.items() if b.expanding)),
            bind={name: process for name, process in bind.items() if process is not None},
            results=tuple(
                c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
            ),
        )
        return self._compiled

    def _sql_for(self, compiled: _Compiled, params: Mapping[str, Any]) -> str:
        lengths = tuple(len(_value(compiled, params, name)) for name in compiled.expanding)
        sql = self._sql.get(lengths)
        if sql is None:
            if len(self._sql) >= SQL_CACHE:  # many combinations of list lengths: start over
                self._sql.clear()
            sql = self._sql[lengths] = _expanded(compiled, lengths)
        return sql

    def _bound(self, compiled: _Compiled, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        return self._sql_for(compiled, params), self._values(compiled, params)

    @staticmethod
    def _values(compiled: _Compiled, params: Mapping[str, Any]) -> list[Any]:
        values: list[Any] = []
        for name in compiled.names:
            value = _value(compiled, params, name)
            process = compiled.bind.get(name)
            if name in compiled.expanding:
                values.extend(value if process is None else [process(v) for v in value])
            else:
                values.append(value if process is None else process(value))
        return values


def _value(compiled: _Compiled, params: Mapping[str, Any], name: str) -> Any:
    return params[name] if name in params else compiled.defaults[name]


def _expanded(compiled: _Compiled, lengths: tuple[int, ...]) -> str:
    """The SQL with its IN lists of these lengths, as SQLAlchemy expands them (an empty list
    matches nothing); checks that its parameters are in the order :meth:`Statement._values`
    gives them."""
    lists = {name: [None] * n for name, n in zip(compiled.expanding, lengths)}
    state = compiled.compiled.construct_expanded_state({**dict.fromkeys(compiled.names), **lists})
    order = [new for name in compiled.names for new in state.parameter_expansion.get(name, [name])]
    if list(state.positiontup or ()) != order:
        raise ValueError(f"Statement: unexpected parameter order {state.positiontup}")
    return str(state.statement)


def _row_type(description: Sequence[Any], compiled: _Compiled) -> Callable[..., Any]:
    keys = [column[0] for column in description]
    if len(set(keys)) != len(keys) or len(keys) != len(compiled.results or keys):
        raise ValueError(f"Statement: result columns must have distinct names: {keys}")
    return namedtuple("Row", keys, rename=True)  # type: ignore[misc]


def insert_statement(model: Any, columns: Iterable[str]) -> Statement:
    """An INSERT of ``columns``, each bound to a parameter of its own name (for ``run_many``)."""
    return Statement(insert(model).values({column: bindparam(column) for column in columns}))


def _on_driver(conn: Connection) -> bool:
    """Is this the synchronous ``sqlite3`` driver (not aiosqlite through ``run_sync``)?"""
    return conn.dialect.driver == "pysqlite"


def _execute(conn: Connection, sql: str, values: list[Any], *, many: bool = False) -> Any:
    """Run on the ``sqlite3`` connection under ``conn`` (in its transaction). Its errors are
    raised as SQLAlchemy's (``OperationalError`` etc.), as ``conn.execute`` would: the API
    answers a database outage with a 503."""
    raw: Any = conn.connection.driver_connection
    try:
        return raw.executemany(sql, values) if many else raw.execute(sql, values)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, values, exc, sqlite3.Error) from exc
