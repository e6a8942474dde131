"""Overlapping write transactions on PostgreSQL: several batches in flight, and what keeps
acceptance exact while they race (a lost race is run again, never a 500)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import Connection, func, select, text, update

from nudge.core import apps, users
from nudge.core.acceptor import Acceptor
from nudge.core.manifest import Manifest
from nudge.core.notifications import Accepted, Limits, NotificationRequest, accept_batch
from nudge.store.batch import RequestBatcher
from nudge.store.db import Database
from nudge.store.migrate import upgrade
from nudge.store.models import Notification, User


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_batches_in_flight_at_once_are_bounded_by_the_concurrency(concurrency: int) -> None:
    """Callers answered together come back together; with free slots their requests are shared
    among them, so that ``concurrency`` batches are processed at once (never more)."""
    in_flight = most = 0
    sizes: list[int] = []

    async def process(batch: list[int]) -> list[int]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        sizes.append(len(batch))
        await asyncio.sleep(0.01)
        in_flight -= 1
        return batch

    batcher: RequestBatcher[int, int] = RequestBatcher(
        process, max_batch=64, name="test", concurrency=concurrency
    )
    batcher.start()
    try:
        for _ in range(3):
            assert await asyncio.gather(*(batcher.submit(n) for n in range(8))) == list(range(8))
    finally:
        await batcher.aclose()
    assert most == concurrency
    assert sizes[:concurrency] == [8 // concurrency] * concurrency


async def test_sqlite_writes_one_transaction_at_a_time_and_postgres_a_share_of_the_pool(
    database_url: str,
) -> None:
    db = Database(database_url, pool_size=12)
    try:
        assert db.overlap == (1 if db.is_sqlite else 3)
    finally:
        await db.close()


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[Database]:
    await upgrade(postgres_url)
    database = Database(postgres_url)
    yield database
    await database.close()


def sleep_while_holding(conn: Connection) -> None:
    """Keep the transaction open (its rows locked, its inserts uncommitted) for a moment."""
    conn.execute(text("SELECT pg_sleep(0.5)"))


async def sleeping(db: Database) -> None:
    """Wait until a transaction of ``db`` sleeps in :func:`sleep_while_holding`."""
    query = text("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'")
    while not await db.query(lambda conn: conn.scalar(query)):
        await asyncio.sleep(0.01)


async def test_a_concurrent_batch_with_the_same_idempotency_key_answers_the_duplicate(
    pg: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Two batches of different users of one app carry the same idempotency key: the second
    one's lookups miss the first's uncommitted row, its insert then fails on the unique index,
    and the batch is run again: one notification, the other request answered as its duplicate."""

    def seed(conn: Connection) -> str:
        app = apps.create_app(conn, Manifest(name="Keys"))
        for uid in ("u1", "u2"):
            users.create_user(conn, users.NewUser(uid=uid, name=uid))
            users.install_app(conn, uid, app["app_id"], [])
        return str(app["app_id"])

    app_id = await pg.write(seed)
    limits = Limits(100, 60)
    first, second = (
        NotificationRequest(app_id=app_id, uid=uid, message=uid, idempotency_key="k")
        for uid in ("u1", "u2")
    )

    def first_batch(conn: Connection) -> list[Accepted]:
        results = accept_batch(conn, [first], limits, lock_rows=True)
        sleep_while_holding(conn)
        return results  # type: ignore[return-value]

    holder = asyncio.create_task(pg.write_now(first_batch))
    await sleeping(pg)
    acceptor = Acceptor(pg, limits, lock_rows=True)  # not started: each request its own batch
    with caplog.at_level(logging.INFO, logger="nudge.acceptor"):
        answer = await acceptor.accept(second)
    (accepted,) = await holder
    assert not accepted.duplicate
    assert answer.duplicate and answer.notification_id == accepted.notification_id
    assert "running the batch again" in caplog.text
    count = select(func.count()).select_from(Notification)
    assert await pg.query(lambda conn: conn.scalar(count)) == 1


async def test_a_transaction_that_postgres_ends_for_a_deadlock_is_run_again(
    pg: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Two transactions lock two rows in opposite orders; PostgreSQL ends one of them (after
    its deadlock timeout) and that one runs again once the other committed: both succeed."""

    def seed(conn: Connection) -> None:
        for uid in ("a", "b"):
            users.create_user(conn, users.NewUser(uid=uid, name=uid))

    await pg.write(seed)

    def rename(first: str, then: str, name: str) -> Callable[[Connection], str]:
        def work(conn: Connection) -> str:
            conn.execute(update(User).where(User.uid == first).values(name=name))
            sleep_while_holding(conn)
            conn.execute(update(User).where(User.uid == then).values(name=name))
            return name

        return work

    with caplog.at_level(logging.INFO, logger="nudge.store"):
        one = asyncio.create_task(pg.write_now(rename("a", "b", "one")))
        await sleeping(pg)
        two = await pg.write_now(rename("b", "a", "two"))
        assert (await one, two) == ("one", "two")
    lost = [getattr(r, "sqlstate", None) for r in caplog.records if "lost a race" in r.message]
    assert lost == ["40P01"]
    names = await pg.query(lambda conn: set(conn.execute(select(User.name)).scalars()))
    assert len(names) == 1  # the transaction run again renamed both rows after the other
