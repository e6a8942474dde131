"""A claim takes at most ``limit`` deliveries, also on PostgreSQL with many due rows (where an
``IN (… FOR UPDATE SKIP LOCKED LIMIT n)`` subquery can be re-run per row and take them all), so
workers share a backlog and keep to NUDGE_DELIVERY_CONCURRENCY."""

from __future__ import annotations

from sqlalchemy import func, select

from nudge.core.notifications import accept_batch
from nudge.delivery import queue
from nudge.store.db import Database
from nudge.store.migrate import upgrade
from nudge.store.models import Delivery
from tests.store.test_store import LIMITS, req, seed


async def test_a_claim_takes_at_most_its_limit(database_url: str) -> None:
    await upgrade(database_url)
    db = Database(database_url)
    try:
        app_id, _ = await seed(db)
        batch = [req(app_id, message=f"m{i}", kind="proactive") for i in range(60)]
        # 60 notifications, 120 due deliveries (device + inbox)
        await db.write(lambda conn: accept_batch(conn, batch, LIMITS))
        first = (await queue.claim(db, "w1", 20, lease_s=30)).jobs
        second = (await queue.claim(db, "w2", 20, lease_s=30)).jobs
        assert len(first) == len(second) == 20
        assert not {j.delivery_id for j in first} & {j.delivery_id for j in second}
        query = select(func.count()).select_from(Delivery).where(Delivery.state == "sending")
        assert await db.query(lambda conn: conn.scalar(query)) == 40
    finally:
        await db.close()
