"""Dialect helpers for statements SQLAlchemy spells per database (upserts, claims)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, and_
from sqlalchemy.dialects import postgresql, sqlite


def dialect_insert(conn: Connection | str) -> Any:
    """``insert`` with ``on_conflict_do_*`` for the connection's database (or dialect name)."""
    name = conn if isinstance(conn, str) else conn.dialect.name
    return postgresql.insert if name == "postgresql" else sqlite.insert


def claimable(key: Any, pick: Select[Any], due: Any, postgres: bool) -> Any:
    """The WHERE of an ``UPDATE`` that claims the rows ``pick`` selects (by ``key``) while they
    are still ``due``: with any number of processes, each row is claimed once.

    On PostgreSQL ``pick`` locks its rows (``FOR UPDATE SKIP LOCKED``) in a CTE, which runs once;
    as ``IN (subquery)`` PostgreSQL may re-run the subquery per row and claim far more than its
    ``LIMIT`` (the same trap as the delivery claim, see ``nudge.delivery.queue``). SQLite runs
    one writer at a time; ``due`` is checked again on the row itself.
    """
    if postgres:
        picked = pick.with_for_update(skip_locked=True).cte("picked")
        return key == picked.c[key.key]
    return and_(key.in_(pick.scalar_subquery()), due)
