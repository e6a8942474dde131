"""The hourly windows as per-minute buckets, on SQLite and PostgreSQL: what acceptance counts
(repeats and refusals nothing), which buckets a window reads, the headers' reset, the limit under
concurrent batches, the migration's back-fill of the last hour, and the buckets' retention."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, insert, select, text

from nudge.core import apps, notifications, users
from nudge.core.manifest import Manifest
from nudge.core.notifications import (
    HOUR,
    Accepted,
    Limits,
    NotificationRequest,
    accept_batch,
)
from nudge.core.retention import WINDOW_KEEP_S, Housekeeper, prune_window_buckets
from nudge.errors import NudgeError, RateLimited
from nudge.store import notifications as store
from nudge.store.db import Database
from nudge.store.migrate import alembic_config, upgrade
from nudge.store.models import WindowBucket
from tests.conftest import statements_run

LIMITS = Limits(default_per_hour=3, dedupe_window_s=60, message_per_hour=2)
# A fixed clock for acceptance, 30 s into a minute: which bucket "now" falls in is known.
T = (time.time() // 60) * 60 + 30
M = store.bucket_of(T)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notifications, "time", SimpleNamespace(time=lambda: T))


async def seed(db: Database, *uids: str) -> str:
    def work(conn: Connection) -> str:
        app = apps.create_app(conn, Manifest(name="Windows"))
        for uid in uids:
            users.create_user(conn, users.NewUser(uid=uid, name=uid))
            users.install_app(conn, uid, app["app_id"], [])
        return str(app["app_id"])

    return await db.write(work)


def req(app_id: str, message: str, uid: str = "u1", **kw: Any) -> NotificationRequest:
    return NotificationRequest(app_id=app_id, uid=uid, message=message, **kw)


async def accept(db: Database, *batch: NotificationRequest) -> list[Accepted | NudgeError]:
    return await db.write_now(
        lambda conn: accept_batch(conn, batch, LIMITS, lock_rows=db.is_postgres)
    )


async def buckets(db: Database) -> list[tuple[Any, ...]]:
    b = WindowBucket
    q = select(b.uid, b.app_id, b.kind, b.minute, b.count).order_by(b.uid, b.kind, b.minute)
    return await db.query(lambda conn: [tuple(row) for row in conn.execute(q)])


async def add_buckets(db: Database, *rows: tuple[str, str, str, int, int]) -> None:
    names = ("uid", "app_id", "kind", "minute", "count")
    values = [dict(zip(names, row)) for row in rows]
    await db.write(lambda conn: conn.execute(insert(WindowBucket), values))


async def test_accepted_notifications_are_counted_repeats_and_refusals_are_not(
    db: Database, clock: None
) -> None:
    app_id = await seed(db, "u1")
    results = await accept(
        db,
        req(app_id, "a"),
        req(app_id, "a"),  # the same message: a repeat
        req(app_id, "b", idempotency_key="k"),
        req(app_id, "c", idempotency_key="k"),  # the same key: a repeat
        req(app_id, "p", kind="proactive"),  # no hourly window
        req(app_id, "m", kind="message"),
    )
    assert [type(r).__name__ for r in results] == ["Accepted"] * 6
    assert await buckets(db) == [
        ("u1", app_id, "direct", M, 2),
        ("u1", app_id, "message", M, 1),
    ]
    third, refused = await accept(db, req(app_id, "d"), req(app_id, "e"))
    assert isinstance(third, Accepted) and third.rate_limit and third.rate_limit.remaining == 0
    assert isinstance(refused, RateLimited)
    # Counted in the bucket that ends at (M + 1) * 60: the slot frees an hour after that.
    assert refused.retry_after == math.ceil((M + 1) * 60 + HOUR - T) == 3630
    assert (await buckets(db))[0] == ("u1", app_id, "direct", M, 3)


async def test_a_window_is_the_current_bucket_and_the_sixty_before_it(
    db: Database, clock: None
) -> None:
    app_id = await seed(db, "u1", "u2")
    await add_buckets(
        db,
        ("u1", app_id, "direct", M - 61, 50),  # ended more than an hour ago
        ("u1", app_id, "direct", M - 60, 1),  # holds part of the last hour
        ("u1", app_id, "direct", M - 5, 1),
        ("u1", app_id, "message", M - 5, 2),  # another kind's window
        ("u2", app_id, "direct", M - 1, 3),  # another user's window
    )
    ok, full, other = await accept(db, req(app_id, "a"), req(app_id, "b"), req(app_id, "c", "u2"))
    assert isinstance(ok, Accepted) and ok.rate_limit is not None
    # The oldest counted bucket (M - 60) leaves the window when the current minute ends.
    assert (ok.rate_limit.remaining, ok.rate_limit.reset) == (0, 30)
    assert isinstance(full, RateLimited) and full.retry_after == 30
    assert isinstance(other, RateLimited) and other.retry_after == 3630 - 60

    per_app, window = await db.query(lambda conn: store.direct_window(conn, app_id, "u1", T - HOUR))
    assert per_app is None and window == (3, (M - 59) * 60)  # what refusals' headers report
    assert await db.query(lambda conn: store.direct_window(conn, app_id, "u3", T - HOUR)) == (
        None,
        None,
    )


async def test_concurrent_batches_never_pass_the_limit(db: Database) -> None:
    """On PostgreSQL each batch locks its install rows before reading the window, so the count
    holds across transactions (and processes); on SQLite writes take turns."""
    app_id = await seed(db, "u1")
    results = await asyncio.gather(*(accept(db, req(app_id, f"m{i}")) for i in range(12)))
    accepted = [r for (r,) in results if isinstance(r, Accepted)]
    assert len(accepted) == LIMITS.default_per_hour
    assert sum(row[-1] for row in await buckets(db)) == LIMITS.default_per_hour


async def test_the_window_is_read_from_its_own_buckets_only(tmp_path: Path) -> None:
    """However many buckets the table holds, a window is one primary-key range (SQLite plan)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/plans.db"
    await upgrade(url)
    db = Database(url)
    try:
        app_id = await seed(db, "u1", "u2")
        await add_buckets(db, *(("u2", app_id, "direct", M - m, 1) for m in range(120)))

        def accept_and_explain(conn: Connection) -> list[str]:
            with statements_run(conn) as statements:
                accept_batch(conn, [req(app_id, "a"), req(app_id, "b", "u2")], LIMITS)
            sql = [s for s, _ in statements if "FROM window_buckets" in s]
            return [
                str(r[-1]) for s in sql for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + s)
            ]

        plans = await db.write_alone(accept_and_explain)
    finally:
        await db.close()
    assert plans == [
        "SEARCH window_buckets USING PRIMARY KEY (uid=? AND app_id=? AND kind=? AND minute>?)"
    ]


def notification(t: float, kind: str, uid: str = "u1", app_id: str | None = "a1") -> dict[str, Any]:
    return {
        "id": f"n_{int(t * 1000):012x}{secrets.token_hex(5)}",
        "app_id": app_id,
        "uid": uid,
        "kind": kind,
        "type": "",
        "title": "t",
        "body": "b",
        "data": "{}",
        "dedupe_hash": secrets.token_hex(32),
        "collapse_key": "c",
        "created_at": t,
    }


async def test_the_upgrade_fills_the_buckets_from_the_last_hour(database_url: str) -> None:
    await upgrade(database_url, "0005")
    now = time.time()
    minute = int(now // 60) - 2
    late = minute * 60 + 50  # late in its minute: rounding instead of the floor shows
    rows = [
        notification(late, "direct"),
        notification(late + 1, "direct"),
        notification(now - 1800, "direct"),
        notification(late, "message"),
        notification(late, "proactive"),  # no window
        notification(late, "admin", app_id=None),
        notification(late, "direct", uid="u2"),
        notification(now - 2 * HOUR, "direct"),  # out of every window
    ]
    columns = ", ".join(rows[0])
    insert_sql = text(f"INSERT INTO notifications ({columns}) VALUES (:{', :'.join(rows[0])})")
    db = Database(database_url)
    try:
        await db.write_alone(lambda conn: conn.execute(insert_sql, rows))
        await upgrade(database_url)
        assert await buckets(db) == [
            ("u1", "a1", "direct", int((now - 1800) // 60), 1),
            ("u1", "a1", "direct", minute, 2),
            ("u1", "a1", "message", minute, 1),
            ("u2", "a1", "direct", minute, 1),
        ]
    finally:
        await db.close()
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0005")
    db = Database(database_url)
    try:
        tables = await db.query(lambda conn: conn.dialect.get_table_names(conn))
        assert "window_buckets" not in tables and "notifications" in tables
    finally:
        await db.close()
    await upgrade(database_url)  # and up again


async def test_retention_removes_the_buckets_no_window_reads(db: Database) -> None:
    now = time.time()
    keep = store.bucket_of(now - WINDOW_KEEP_S)
    await add_buckets(
        db,
        *(("u1", "a1", "direct", keep - 1 - m, 1) for m in range(5)),
        ("u1", "a1", "direct", keep, 1),
        ("u1", "a1", "direct", store.bucket_of(now), 1),
    )
    assert await prune_window_buckets(db, now, chunk=2) == 5  # three chunks
    assert [row[3] for row in await buckets(db)] == [keep, store.bucket_of(now)]


async def test_the_housekeeper_prunes_buckets_when_notifications_are_kept(db: Database) -> None:
    now = time.time()
    old = store.bucket_of(now - WINDOW_KEEP_S) - 1
    await add_buckets(db, ("u1", "a1", "direct", old, 1))
    keeper = Housekeeper(db, retention_s=0, interval_s=3600)  # 0: notifications stay
    task = asyncio.create_task(keeper.run())
    for _ in range(200):
        if not await buckets(db):
            break
        await asyncio.sleep(0.01)
    keeper.stop()
    await asyncio.wait_for(task, 2)
    assert await buckets(db) == []
