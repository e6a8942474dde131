"""Migration 0005 (imported facts, request counters) on a database holding 0004's facts, both
ways, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from alembic import command
from sqlalchemy import Connection, text

from nudge.store.db import Database
from nudge.store.migrate import alembic_config, upgrade


async def test_0005_keeps_facts_as_added_on_the_platform(database_url: str) -> None:
    await upgrade(database_url, "0004")
    db = Database(database_url)
    try:

        def old_rows(conn: Connection) -> None:
            conn.execute(
                text("INSERT INTO users (uid, name, token_hash, created_at) VALUES ('u','U','h',0)")
            )
            conn.execute(
                text("INSERT INTO user_facts (uid, text, created_at) VALUES ('u', 'Likes tea', 1)")
            )

        def new_rows(conn: Connection) -> None:
            row = conn.execute(text("SELECT app_id, tags FROM user_facts")).one()
            assert row.app_id is None and row.tags in ([], "[]")
            conn.execute(
                text("INSERT INTO rate_counters (key, window_end, count) VALUES ('k', 1.5, 2)")
            )

        await db.write_alone(old_rows)
        await upgrade(database_url)
        await db.write_alone(new_rows)
    finally:
        await db.close()

    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0004")
    db = Database(database_url)
    try:
        facts = text("SELECT text FROM user_facts")
        assert await db.query(lambda conn: list(conn.execute(facts).scalars())) == ["Likes tea"]
        tables = await db.query(lambda conn: conn.dialect.get_table_names(conn))
        assert "rate_counters" not in tables
    finally:
        await db.close()
    await upgrade(database_url)  # and up again
