"""A dispatcher's claim takes at most ``limit`` due conversations, also on PostgreSQL with many due
rows (where ``IN (… FOR UPDATE SKIP LOCKED LIMIT n)`` can be re-run per row and take them all), and
two claimers never share a conversation."""

from __future__ import annotations

import time

from sqlalchemy import insert

from nudge.core import users
from nudge.proactive.flushes import claim_flushes
from nudge.store.db import Database
from nudge.store.migrate import upgrade
from nudge.store.models import Conversation, Segment


async def test_a_flush_claim_takes_at_most_its_limit(database_url: str) -> None:
    await upgrade(database_url)
    db = Database(database_url)
    try:
        now = time.time()
        async with db.begin() as conn:
            await conn.run_sync(users.create_user, users.NewUser(uid="ana", name="Ana"))
            await conn.execute(
                insert(Conversation),
                [
                    {
                        "id": f"c{i}",
                        "uid": "ana",
                        "session_id": f"s{i}",
                        "status": "live",
                        "created_at": now,
                        "started_at": now,
                        "flushed_upto": 0,
                        "flush_due_at": now - 1,
                    }
                    for i in range(60)
                ],
            )
            await conn.execute(
                insert(Segment),
                [
                    {
                        "conversation_id": f"c{i}",
                        "uid": "ana",
                        "text": f"hello {i}",
                        "created_at": now,
                    }
                    for i in range(60)
                ],
            )
        async with db.begin() as conn:
            first = await conn.run_sync(claim_flushes, time.time(), limit=20, interval_s=1.0)
        async with db.begin() as conn:
            second = await conn.run_sync(claim_flushes, time.time(), limit=20, interval_s=1.0)
        assert len(first) == len(second) == 20
        assert not {f.conversation_id for f in first} & {f.conversation_id for f in second}
        assert {f.session_id for f in first} == {f"s{f.conversation_id[1:]}" for f in first}
        assert all(len(f.segments) == 1 for f in first + second)
    finally:
        await db.close()
