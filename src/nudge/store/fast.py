"""Hot statements, compiled once and run on SQLite's driver directly.

Running a small statement through SQLAlchemy's ``Connection.execute`` costs many times what SQLite
itself spends on it (docs/decisions.md). A :class:`Statement` wraps a statement built once at
import; on SQLite it is compiled once, its SQL expanded once per combination of lengths of its
``IN`` lists, and run on the ``sqlite3`` connection with its types' bind and result processing
(JSON, booleans), all from SQLAlchemy's public API. Rows come back as named tuples (``row.id``,
``row[0]``), named as the driver names the columns, as SQLAlchemy's rows are (``count_1`` for an
unlabeled ``count()``). On PostgreSQL (and aiosqlite) it runs through SQLAlchemy as usual: there
the round trip to the server, not Python, is the cost.
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

_DRIVER = "pysqlite"  # the synchronous sqlite3 driver (not aiosqlite through run_sync)
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
        if conn.dialect.driver != _DRIVER:
            return list(conn.execute(self.statement, params or {}).all())
        compiled = self._compile(conn)
        sql, values = self._bound(compiled, params or {})
        raw = (cursor := _execute(conn, sql, values)).fetchall()
        if cursor.description is None:
            return raw
        self._row = self._row or _row_type(cursor.description, compiled)
        if any(compiled.results):
            raw = [
                [v if f is None or v is None else f(v) for f, v in zip(compiled.results, r)]
                for r in raw
            ]
        return [self._row(*r) for r in raw]

    def run(self, conn: Connection, params: Mapping[str, Any] | None = None) -> int:
        """Execute a write; returns the number of rows it changed."""
        if conn.dialect.driver != _DRIVER:
            return int(conn.execute(self.statement, params or {}).rowcount or 0)
        return int(_execute(conn, *self._bound(self._compile(conn), params or {})).rowcount)

    def run_many(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> None:
        """Execute a write once per parameter set (``executemany``); no expanding lists."""
        if not params:
            return
        if conn.dialect.driver != _DRIVER:
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
        late = compiled.literal_execute_params, compiled.insert_prefetch, compiled.update_prefetch
        if any(late) or dialect.paramstyle != "qmark":  # literals, Python-side defaults
            raise ValueError(f"Statement cannot run on the driver: {self.statement}")
        names = tuple(compiled.positiontup or ())
        binds = {name: compiled.binds[name] for name in names}
        bind = {n: b.type.dialect_impl(dialect).bind_processor(dialect) for n, b in binds.items()}
        columns = getattr(self.statement, "exported_columns", ())  # a SELECT's, or RETURNING
        self._compiled = _Compiled(
            compiled,
            names,
            {n: b.effective_value for n, b in binds.items() if not b.required},
            tuple(dict.fromkeys(n for n, b in binds.items() if b.expanding)),
            {n: process for n, process in bind.items() if process is not None},
            tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns),
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
    """The SQL with IN lists of these lengths (an empty one matches nothing), as SQLAlchemy
    expands it; its parameters must be in the order of :meth:`Statement._values`."""
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


def _execute(conn: Connection, sql: str, values: list[Any], *, many: bool = False) -> Any:
    """Run on the ``sqlite3`` connection under ``conn`` (in its transaction); its errors raised
    as ``conn.execute`` would (``OperationalError`` etc.: the API answers an outage with a 503)."""
    raw: Any = conn.connection.driver_connection
    try:
        return raw.executemany(sql, values) if many else raw.execute(sql, values)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, values, exc, sqlite3.Error) from exc
