"""The store on both databases: migrations, the acceptance batch, and the delivery queue."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, func, select, update

from nudge.core import apps, users
from nudge.core.manifest import Manifest
from nudge.core.notifications import Accepted, Limits, NotificationRequest, accept_batch
from nudge.delivery import queue
from nudge.delivery.providers.base import Outcome, SendResult
from nudge.delivery.queue import DeliveryRetry
from nudge.errors import NotFound, NudgeError, RateLimited, Unauthorized
from nudge.ids import hash_secret
from nudge.net.guard import HostAllowList
from nudge.store.db import Database
from nudge.store.migrate import upgrade
from nudge.store.models import ChatMessage, Delivery, Device, Notification
from tests.conftest import sqlite_scans, statements_run

LIMITS = Limits(default_per_hour=3, dedupe_window_s=60)


@pytest.fixture
async def db(database_url: str) -> Database:
    await upgrade(database_url)
    await upgrade(database_url)  # a second run is a no-op
    database = Database(database_url)
    yield database  # type: ignore[misc]
    await database.close()


async def seed(db: Database) -> tuple[str, str]:
    def work(conn: Connection) -> dict[str, str]:
        app = apps.create_app(conn, Manifest(name="Store Test"))
        users.create_user(conn, users.NewUser(uid="u1", name="Ana"))
        users.create_user(conn, users.NewUser(uid="u2", name="Bob"))
        users.install_app(conn, "u1", app["app_id"], [])
        users.add_device(
            conn,
            "u1",
            users.NewDevice(platform="log", token="device-token-1"),
            webpush_hosts=HostAllowList.parse("*"),
        )
        return app

    app = await db.write(work)
    return app["app_id"], app["app_secret"]


async def accept(db: Database, batch: list[NotificationRequest]) -> list[Accepted | NudgeError]:
    return await db.write(lambda conn: accept_batch(conn, batch, LIMITS, lock_rows=db.is_postgres))


async def count(db: Database, model: object) -> int | None:
    return await db.query(lambda conn: conn.scalar(select(func.count()).select_from(model)))  # type: ignore[arg-type]


def req(app_id: str, uid: str = "u1", message: str = "hi", **kw: object) -> NotificationRequest:
    return NotificationRequest(app_id=app_id, uid=uid, message=message, **kw)  # type: ignore[arg-type]


async def test_batch_answers_each_request_in_order(db: Database) -> None:
    app_id, secret = await seed(db)
    good_key = hash_secret(secret)
    batch = [
        req(app_id, message="a", key_hash=good_key),
        req(app_id, message="b", key_hash=hash_secret("sk_" + "0" * 32)),
        req(app_id, uid="nobody", message="c", key_hash=good_key),
        req(app_id, uid="u2", message="d", key_hash=good_key),
        req(app_id, message="a", key_hash=good_key),  # same text within the window
        req(app_id, message="e", key_hash=good_key, idempotency_key="k1"),
        req(app_id, message="f", key_hash=good_key, idempotency_key="k1"),
        req(app_id, message="g", key_hash=good_key),
        req(app_id, message="h", key_hash=good_key),  # over the limit of 3
    ]
    results = await accept(db, batch)
    kinds = [type(r).__name__ for r in results]
    assert kinds == [
        "Accepted",
        "Unauthorized",
        "NotFound",
        "NotFound",
        "Accepted",
        "Accepted",
        "Accepted",
        "Accepted",
        "RateLimited",
    ]
    a, dup, e, e_again, g = (results[i] for i in (0, 4, 5, 6, 7))
    assert isinstance(a, Accepted) and isinstance(dup, Accepted)
    assert dup.duplicate and dup.notification_id == a.notification_id and dup.devices == 1
    assert isinstance(e, Accepted) and isinstance(e_again, Accepted)
    assert e_again.duplicate and e_again.notification_id == e.notification_id
    assert isinstance(g, Accepted) and g.rate_limit is not None and g.rate_limit.remaining == 0
    limited = results[8]
    assert isinstance(limited, RateLimited) and limited.retry_after >= 3599
    assert "has not installed" in str(results[3]) and isinstance(results[1], Unauthorized)
    assert isinstance(results[2], NotFound)
    assert await count(db, Notification) == 3
    assert await count(db, Delivery) == 6  # each accepted notification: the inbox + one device


async def test_accepted_rows_read_back_as_written(db: Database) -> None:
    """The batch's rows go in as one insert per table on PostgreSQL (arrays) and one per row on
    SQLite: either way each column reads back as given, JSON as JSON, NULLs as NULLs, and the
    chat lines in the batch's order."""
    app_id, _ = await seed(db)
    batch = [
        req(app_id, message="first", type="t1", data={"k": "v"}, idempotency_key="idem-1"),
        req(app_id, message="second: 'quoted' \"text\""),
    ]
    first, second = await accept(db, batch)
    assert isinstance(first, Accepted) and isinstance(second, Accepted)

    def read(conn: Connection) -> tuple[list[Any], list[Any], list[Any]]:
        notes = conn.execute(select(Notification).order_by(Notification.id)).all()
        sends = conn.execute(select(Delivery).order_by(Delivery.notification_id, Delivery.provider))
        chats = conn.execute(select(ChatMessage).order_by(ChatMessage.id)).all()
        return list(notes), list(sends.all()), list(chats)

    notes, sends, chats = await db.query(read)
    by_id = {n.id: n for n in notes}
    one, two = by_id[first.notification_id], by_id[second.notification_id]
    assert (one.body, one.type, one.idempotency_key, one.read_at) == ("first", "t1", "idem-1", None)
    assert one.data["k"] == "v" and one.data["notification_id"] == one.id
    assert (two.body, two.idempotency_key) == ("second: 'quoted' \"text\"", None)
    assert [(d.notification_id, d.provider, d.state, d.attempts) for d in sends] == sorted(
        (n, p, "queued", 0) for n in by_id for p in ("inbox", "log")
    )
    assert [d.device_id is None for d in sends] == [True, False, True, False]
    assert [(c.text, c.notification_id) for c in chats] == [
        ("first", one.id),
        ("second: 'quoted' \"text\"", two.id),
    ]


async def test_limit_counts_earlier_batches(db: Database) -> None:
    app_id, _ = await seed(db)
    for i in range(3):
        (r,) = await accept(db, [req(app_id, message=f"m{i}")])
        assert isinstance(r, Accepted)
    (r,) = await accept(db, [req(app_id, message="m3")])
    assert isinstance(r, RateLimited)
    # Proactive notifications have their own limit (the 30 s claim), not the hourly one.
    (p,) = await accept(db, [req(app_id, message="p", kind="proactive")])
    assert isinstance(p, Accepted)


async def test_claim_send_record(db: Database) -> None:
    app_id, _ = await seed(db)
    await accept(db, [req(app_id, message="x")])
    jobs = (await queue.claim(db, "w1", 10, lease_s=30)).jobs
    assert sorted(j.provider for j in jobs) == ["inbox", "log"]
    assert (await queue.claim(db, "w2", 10, lease_s=30)).jobs == []  # claimed rows are not due
    policy = DeliveryRetry(base_s=0.01, max_s=0.01, max_age_s=3600)
    by = {j.provider: j for j in jobs}
    states = await queue.record(
        db,
        "w1",
        [
            (by["inbox"], SendResult(Outcome.DELIVERED)),
            (by["log"], SendResult(Outcome.RETRY, "busy", retry_after=0.0)),
        ],
        policy,
    )
    assert states == {by["inbox"].delivery_id: "delivered", by["log"].delivery_id: "retrying"}
    await asyncio.sleep(0.05)
    (again,) = (await queue.claim(db, "w2", 10, lease_s=30)).jobs
    assert again.provider == "log" and again.attempts == 1
    states = await queue.record(
        db, "w2", [(again, SendResult(Outcome.TOKEN_INVALID, "gone"))], policy
    )
    assert states == {again.delivery_id: "token-removed"}
    assert await count(db, Device) == 0


async def test_a_late_worker_cannot_overwrite_a_reclaimed_delivery(db: Database) -> None:
    app_id, _ = await seed(db)
    await accept(db, [req(app_id, message="x")])
    jobs = (await queue.claim(db, "slow", 10, lease_s=30)).jobs
    # the lease runs out
    await db.write(lambda conn: conn.execute(update(Delivery).values(lease_until=time.time() - 1)))
    taken = (await queue.claim(db, "fast", 10, lease_s=30)).jobs
    assert {j.delivery_id for j in taken} == {j.delivery_id for j in jobs}
    policy = DeliveryRetry(base_s=1, max_s=1, max_age_s=3600)
    assert (
        await queue.record(db, "slow", [(jobs[0], SendResult(Outcome.FAILED, "x"))], policy) == {}
    )
    assert await queue.release(db, "fast") == 2


async def test_retries_end_as_failed_after_the_max_age(db: Database) -> None:
    app_id, _ = await seed(db)
    await accept(db, [req(app_id, message="x")])
    jobs = (await queue.claim(db, "w", 10, lease_s=30)).jobs
    policy = DeliveryRetry(base_s=10, max_s=10, max_age_s=1)
    states = await queue.record(
        db, "w", [(j, SendResult(Outcome.RETRY, "503")) for j in jobs], policy
    )
    assert set(states.values()) == {"failed"}
    errors = await db.query(lambda conn: conn.execute(select(Delivery.last_error)).scalars().all())
    assert all(e.startswith("gave up after 1 attempts") and e.endswith("503") for e in errors)


async def test_concurrent_claimers_never_share_a_delivery(db: Database) -> None:
    """Four workers racing over 200 deliveries: each is claimed exactly once."""
    app_id, _ = await seed(db)
    await accept(db, [req(app_id, message=f"m{i}", kind="proactive") for i in range(100)])
    claimed: list[str] = []

    async def worker(name: str) -> None:
        while True:
            jobs = (await queue.claim(db, name, 7, lease_s=30)).jobs
            if not jobs:
                return
            claimed.extend(j.delivery_id for j in jobs)

    await asyncio.gather(*(worker(f"w{i}") for i in range(4)))
    assert len(claimed) == 200 and len(set(claimed)) == 200


async def test_install_of_unknown_scope_or_app(db: Database) -> None:
    await seed(db)
    with pytest.raises(NotFound):
        await db.write(lambda conn: users.install_app(conn, "u1", "app_missing", []))


async def test_batch_queries_search_indexes_on_sqlite(tmp_path: Path) -> None:
    """Every lookup of a full acceptance batch is a narrow index search: SQLite scans the whole
    index for a row-value ``(a, b) IN (...)`` list, and, given long IN lists, picked the app's
    idempotency index for the hourly window (reading every notification of the app)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/plans.db"
    await upgrade(url)
    database = Database(url)
    try:
        app_id, secret = await seed(database)
        uids = [f"p{i}" for i in range(16)]

        def create(conn: Connection) -> None:
            for uid in uids:
                users.create_user(conn, users.NewUser(uid=uid, name=uid))
                users.install_app(conn, uid, app_id, [])

        await database.write(create)
        key = hash_secret(secret)
        batch = [
            req(app_id, message="a", key_hash=key, idempotency_key="k"),
            req(app_id, uid="u2", message="b"),  # not installed: the users lookup runs too
            *(req(app_id, uid=uid, message=uid, key_hash=key) for uid in uids),
        ]

        def accept_and_explain(conn: Connection) -> tuple[int, list[str]]:
            with statements_run(conn) as statements:
                accept_batch(conn, batch, LIMITS)
            return len(statements), sqlite_scans(conn, statements)

        run, scans = await database.write_alone(accept_and_explain)
    finally:
        await database.close()
    assert run >= 6 and scans == []
