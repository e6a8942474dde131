"""Migration 0005 (imported facts, request counters) on a database holding 0004's facts, both
ways, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from alembic import command
from sqlalchemy import text

from nudge.store.db import Database
from nudge.store.migrate import alembic_config, upgrade


async def test_0005_keeps_facts_as_added_on_the_platform(database_url: str) -> None:
    await upgrade(database_url, "0004")
    db = Database(database_url)
    try:
        async with db.begin() as conn:
            await conn.execute(
                text("INSERT INTO users (uid, name, token_hash, created_at) VALUES ('u','U','h',0)")
            )
            await conn.execute(
                text("INSERT INTO user_facts (uid, text, created_at) VALUES ('u', 'Likes tea', 1)")
            )
        await upgrade(database_url)
        async with db.begin() as conn:
            row = (await conn.execute(text("SELECT app_id, tags FROM user_facts"))).one()
            assert row.app_id is None and row.tags in ([], "[]")
            await conn.execute(
                text("INSERT INTO rate_counters (key, window_end, count) VALUES ('k', 1.5, 2)")
            )
    finally:
        await db.close()

    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0004")
    db = Database(database_url)
    try:
        async with db.read() as conn:
            facts = (await conn.execute(text("SELECT text FROM user_facts"))).scalars()
            assert list(facts) == ["Likes tea"]
            tables = await conn.run_sync(lambda c: c.dialect.get_table_names(c))
            assert "rate_counters" not in tables
    finally:
        await db.close()
    await upgrade(database_url)  # and up again
