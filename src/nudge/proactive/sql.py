"""Dialect helpers for statements SQLAlchemy spells per database (upserts)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite


def dialect_insert(conn: Connection | str) -> Any:
    """``insert`` with ``on_conflict_do_*`` for the connection's database (or dialect name)."""
    name = conn if isinstance(conn, str) else conn.dialect.name
    return postgresql.insert if name == "postgresql" else sqlite.insert
