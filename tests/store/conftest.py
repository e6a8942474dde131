"""Fixtures of the store tests."""

from __future__ import annotations

import pytest

from nudge.store.db import Database
from nudge.store.migrate import upgrade


@pytest.fixture
async def db(database_url: str) -> Database:
    """A migrated database (SQLite and PostgreSQL, from ``database_url``)."""
    await upgrade(database_url)
    database = Database(database_url)
    yield database  # type: ignore[misc]
    await database.close()
