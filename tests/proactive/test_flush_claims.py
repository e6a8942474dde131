"""A dispatcher's claim takes at most ``limit`` due conversations, also on PostgreSQL with many due
rows (where ``IN (… FOR UPDATE SKIP LOCKED LIMIT n)`` can be re-run per row and take them all), and
two claimers never share a conversation."""

from __future__ import annotations

import time
from functools import partial

from sqlalchemy import Connection, insert

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

        def seed(conn: Connection) -> None:
            users.create_user(conn, users.NewUser(uid="ana", name="Ana"))
            conn.execute(
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
            conn.execute(
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

        await db.write(seed)
        claim = partial(claim_flushes, limit=20, interval_s=1.0)
        first = await db.write(lambda conn: claim(conn, time.time()))
        second = await db.write(lambda conn: claim(conn, time.time()))
        assert len(first) == len(second) == 20
        assert not {f.conversation_id for f in first} & {f.conversation_id for f in second}
        assert {f.session_id for f in first} == {f"s{f.conversation_id[1:]}" for f in first}
        assert all(len(f.segments) == 1 for f in first + second)
    finally:
        await db.close()
