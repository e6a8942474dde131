"""Hot statements, compiled once and run on SQLite's driver directly.

Running a small statement through SQLAlchemy costs ~0.1-0.3 ms of Python (cache key, compiled
cache lookup, execution context, parameter and result processing), ten to fifty times what
SQLite itself spends on it. On the hot paths (a live session's segments, its webhook flush, the
proactive claim and its reads, traces) that was most of the event loop's time. A
:class:`Statement` wraps a statement built once at import; on SQLite it is compiled once per
dialect (and per length of its expanding ``IN`` lists) and executed on the ``sqlite3``
connection with the same bind and result processing SQLAlchemy would apply (JSON, booleans).
On PostgreSQL (and on aiosqlite) it runs through SQLAlchemy as usual: there the round trip to
the server, not Python, is the cost.

Rows come back as named tuples (``row.id``, ``row[0]``), like SQLAlchemy's rows.
"""

from __future__ import annotations

import re
import sqlite3
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, bindparam, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

_POSTCOMPILE = re.compile(r"__\[POSTCOMPILE_(\w+)\]")
SQL_CACHE = 1024  # rendered SQL strings kept per statement (one per combination of list lengths)


@dataclass(frozen=True)
class _Compiled:
    sql_parts: tuple[str, ...]  # the SQL split around expanding lists (odd items: their names)
    names: tuple[str, ...]  # the parameters in positional order
    defaults: Mapping[str, Any]  # values bound in the statement itself
    expanding: frozenset[str]
    bind: Mapping[str, Callable[[Any], Any]]
    row: Callable[..., Any] | None  # named tuple of the result columns
    results: tuple[Callable[[Any], Any] | None, ...]


class Statement:
    """A statement built once, run through the driver on SQLite (see the module docstring)."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: _Compiled | None = None
        self._sql: dict[tuple[int, ...], str] = {}

    def rows(self, conn: Connection, params: Mapping[str, Any] | None = None) -> list[Any]:
        """The result rows (a SELECT, or a write with RETURNING)."""
        if not _on_driver(conn):
            return list(conn.execute(self.statement, params or {}).all())
        compiled = self._compile(conn)
        sql, values = self._bound(compiled, params or {})
        raw = _execute(conn, sql, values).fetchall()
        if compiled.row is None:
            return raw
        if any(compiled.results):
            raw = [
                [v if f is None or v is None else f(v) for f, v in zip(compiled.results, r)]
                for r in raw
            ]
        return [compiled.row(*r) for r in raw]

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
        if compiled.literal_execute_params or dialect.paramstyle != "qmark":
            raise ValueError(f"Statement cannot run on the driver: {self.statement}")
        parts = tuple(_POSTCOMPILE.split(compiled.string))
        columns = compiled._result_columns or []
        keys = [c.keyname for c in columns]
        if len(set(keys)) != len(keys):
            raise ValueError(f"Statement: result columns must have distinct names: {keys}")
        self._compiled = _Compiled(
            sql_parts=parts,
            names=tuple(compiled.positiontup or ()),
            defaults={
                name: bind.effective_value
                for name, bind in compiled.binds.items()
                if bind.value is not None or not bind.required
            },
            expanding=frozenset(parts[1::2]),
            bind=dict(compiled._bind_processors),
            row=namedtuple("Row", keys, rename=True) if keys else None,  # type: ignore[misc]
            results=tuple(c.type._cached_result_processor(dialect, None) for c in columns),
        )
        return self._compiled

    def _sql_for(self, compiled: _Compiled, params: Mapping[str, Any]) -> str:
        lengths = tuple(len(_value(compiled, params, name)) for name in compiled.sql_parts[1::2])
        sql = self._sql.get(lengths)
        if sql is None:
            parts = list(compiled.sql_parts)
            for i, n in enumerate(lengths):
                # An empty list matches nothing, as SQLAlchemy renders it.
                parts[2 * i + 1] = ", ".join("?" * n) if n else "SELECT 1 WHERE 1 != 1"
            if len(self._sql) >= SQL_CACHE:  # many combinations of list lengths: start over
                self._sql.clear()
            sql = self._sql[lengths] = "".join(parts)
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
