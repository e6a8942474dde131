"""Retention deletes old notifications with their deliveries, and nothing else."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import Connection, func, select

from nudge.core import apps, users
from nudge.core.manifest import Manifest
from nudge.core.notifications import Limits, NotificationRequest, accept_batch
from nudge.core.retention import Housekeeper, prune_notifications
from nudge.net.guard import HostAllowList
from nudge.store.db import Database
from nudge.store.migrate import upgrade
from nudge.store.models import ChatMessage, Delivery, Notification


@pytest.fixture
async def db(database_url: str) -> Database:
    await upgrade(database_url)
    database = Database(database_url)

    def seed(conn: Connection) -> dict[str, str]:
        app = apps.create_app(conn, Manifest(name="Old"))
        users.create_user(conn, users.NewUser(uid="u1", name="Ana"))
        users.install_app(conn, "u1", app["app_id"], [])
        users.add_device(
            conn,
            "u1",
            users.NewDevice(platform="log", token="device-1"),
            webpush_hosts=HostAllowList.parse("*"),
        )
        return app

    app = await database.write(seed)
    database.app_id = app["app_id"]  # type: ignore[attr-defined]
    yield database  # type: ignore[misc]
    await database.close()


async def send(db: Database, *messages: str) -> None:
    requests = [
        NotificationRequest(app_id=db.app_id, uid="u1", message=m)  # type: ignore[attr-defined]
        for m in messages
    ]
    await db.write(lambda conn: accept_batch(conn, requests, Limits(100, 60)))


async def counts(db: Database) -> tuple[int, int, int]:
    def work(conn: Connection) -> tuple[int, int, int]:
        n, d, c = (
            int(conn.scalar(select(func.count()).select_from(table)) or 0)
            for table in (Notification, Delivery, ChatMessage)
        )
        return n, d, c

    return await db.query(work)


async def test_old_notifications_go_with_their_deliveries(db: Database) -> None:
    await send(db, "one", "two", "three", "four", "five")
    await asyncio.sleep(0.01)  # ids have millisecond resolution
    cutoff = time.time()
    await asyncio.sleep(0.01)
    await send(db, "six")
    assert await counts(db) == (6, 12, 6)  # the inbox and one device each

    assert await prune_notifications(db, cutoff, chunk=2) == 5  # three chunks
    assert await counts(db) == (1, 2, 6)  # the app chat stays
    assert await db.query(lambda conn: conn.scalar(select(Notification.body))) == "six"
    assert await prune_notifications(db, cutoff) == 0


async def test_housekeeper_prunes_and_stops_promptly(db: Database) -> None:
    await send(db, "old")
    await asyncio.sleep(0.01)
    keeper = Housekeeper(db, retention_s=0.005, interval_s=3600)
    task = asyncio.create_task(keeper.run())

    async def pruned() -> bool:
        return (await counts(db))[0] == 0

    for _ in range(200):
        if await pruned():
            break
        await asyncio.sleep(0.01)
    assert await pruned()
    keeper.stop()
    await asyncio.wait_for(task, 2)  # not the hour-long interval


async def test_old_traces_go_in_chunks(db: Database) -> None:
    from functools import partial

    from nudge.core.retention import prune_in_chunks
    from nudge.proactive.traces import TraceRecorder, save_traces
    from nudge.store.models import Trace
    from nudge.store.traces import prune_traces

    def record(n: int) -> list[TraceRecorder]:
        return [TraceRecorder(db.app_id, "u1", "s1", "transcript_processed") for _ in range(n)]  # type: ignore[attr-defined]

    await db.write(partial(save_traces, traces=record(5)))
    await asyncio.sleep(0.01)  # ids have millisecond resolution
    cutoff = time.time()
    await asyncio.sleep(0.01)
    kept = record(2)
    await db.write(partial(save_traces, traces=kept))

    prune = partial(prune_traces, older_than=cutoff)
    assert await prune_in_chunks(db, prune, chunk=2) == 5  # three chunks
    left = await db.query(lambda conn: set(conn.execute(select(Trace.id)).scalars()))
    assert left == {t.id for t in kept}
    assert await prune_in_chunks(db, prune) == 0
