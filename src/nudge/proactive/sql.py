"""Dialect helpers for statements SQLAlchemy spells per database (upserts)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite


def dialect_insert(conn: Connection) -> Any:
    """``insert`` with ``on_conflict_do_*`` for the connection's database."""
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
