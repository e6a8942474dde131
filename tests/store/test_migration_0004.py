"""Migration 0004 (conversations as Omi keeps them) on a database holding 0003's rows, both ways,
on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from alembic import command
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from nudge.store.db import Database
from nudge.store.migrate import alembic_config, upgrade


def _run(*statements: str) -> Callable[[Connection], None]:
    def work(conn: Connection) -> None:
        for statement in statements:
            conn.execute(text(statement))

    return work


def _insert_old_rows(conn: Connection) -> None:
    _run(
        "INSERT INTO users (uid, name, token_hash, created_at) VALUES ('u', 'U', 'h', 0)",
        "INSERT INTO conversations (id, uid, status, title, overview, transcript, "
        "created_at, started_at, flushed_upto) "
        "VALUES ('old-session', 'u', 'finished', 'Old', '', 'User: hi\n', 1, 1, 0)",
    )(conn)


def _live_row(conversation_id: str) -> str:
    return (
        "INSERT INTO conversations (id, uid, session_id, status, title, overview, transcript, "
        f"created_at, started_at, flushed_upto) VALUES ('{conversation_id}', 'u', 'shared', "
        "'live', '', '', '', 2, 2, 0)"
    )


async def test_0004_keeps_old_conversations_and_allows_one_live_per_session(
    database_url: str,
) -> None:
    await upgrade(database_url, "0003")
    db = Database(database_url)
    try:
        await db.write_alone(_insert_old_rows)
        await upgrade(database_url)
        select_new = text(
            "SELECT session_id, source, discarded, emoji, category, action_items, "
            "events, summary_pending, silence_due_at, geolocation FROM conversations"
        )
        row = await db.query(lambda conn: conn.execute(select_new).one())
        # The old id became the session id; Omi's defaults fill the new fields.
        assert row.session_id == "old-session" and row.source == "omi"
        assert not row.discarded and not row.summary_pending  # 0 on SQLite, False on PostgreSQL
        assert (row.emoji, row.category) == ("🧠", "other")
        assert row.action_items in ([], "[]") and row.events in ([], "[]")
        assert row.silence_due_at is None and row.geolocation is None

        await db.write_alone(_run(_live_row("c1")))
        with pytest.raises(IntegrityError):  # a second live conversation in the same session
            await db.write_alone(_run(_live_row("c2")))
        # once the first is finished, a new one may open
        finish = "UPDATE conversations SET status = 'finished' WHERE id='c1'"
        await db.write_alone(_run(finish, _live_row("c2")))
    finally:
        await db.close()

    # Down and up again: every row is kept.
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0003")
    await upgrade(database_url)
    db = Database(database_url)
    try:
        ids = text("SELECT id FROM conversations ORDER BY id")
        assert await db.query(lambda conn: list(conn.execute(ids).scalars())) == [
            "c1",
            "c2",
            "old-session",
        ]
    finally:
        await db.close()
