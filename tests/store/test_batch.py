"""Group commit and synchronous transactions: what a batch promises its callers."""

from __future__ import annotations

import asyncio
import sqlite3
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, select

from nudge.core import users
from nudge.core.acceptor import Acceptor
from nudge.core.notifications import Limits, NotificationRequest
from nudge.errors import NotFound, NudgeError
from nudge.store.batch import BatchWriter, RequestBatcher, Work
from nudge.store.db import CHECKPOINT_EVERY, Database
from nudge.store.migrate import upgrade
from nudge.store.models import Notification, User


async def test_a_request_that_breaks_its_batch_fails_alone() -> None:
    seen: list[list[int]] = []

    async def process(batch: list[int]) -> list[int]:
        seen.append(batch)
        await asyncio.sleep(0)
        if 13 in batch:
            raise ValueError("unlucky")
        return [n * 2 for n in batch]

    batcher: RequestBatcher[int, int] = RequestBatcher(process, max_batch=16, name="test")
    batcher.start()
    try:
        results = await asyncio.gather(
            *(batcher.submit(n) for n in (11, 12, 13, 14)), return_exceptions=True
        )
    finally:
        await batcher.aclose()
    assert results[:2] == [22, 24] and results[3] == 28
    assert isinstance(results[2], ValueError)
    assert seen[0] == [11, 12, 13, 14]  # one batch first, then each request alone
    assert seen[1:] == [[11], [12], [13], [14]]


def add_user(conn: Connection, uid: str, fail: bool = False) -> str:
    conn.execute(
        User.__table__.insert().values(uid=uid, name=uid, token_hash=uid + "h", created_at=0.0)
    )
    if fail:
        raise NotFound("nothing")
    return uid


async def all_uids(db: Database) -> set[str]:
    return await db.query(lambda conn: set(conn.execute(select(User.uid)).scalars()))


@pytest.mark.parametrize("on_loop", [False, True])
async def test_a_transaction_commits_or_rolls_back(db: Database, on_loop: bool) -> None:
    kept = await db._transact(lambda conn: add_user(conn, "kept"), on_loop=on_loop)
    assert kept == "kept"
    with pytest.raises(NotFound):
        await db._transact(lambda conn: add_user(conn, "gone", True), on_loop=on_loop)
    assert await all_uids(db) == {"kept"}


async def sqlite_database(tmp_path: Path) -> tuple[Database, Path]:
    path = tmp_path / "nudge.db"
    await upgrade(f"sqlite+aiosqlite:///{path}")
    return Database(f"sqlite+aiosqlite:///{path}"), path


async def test_work_for_the_loop_waits_in_the_thread_while_another_process_writes(
    tmp_path: Path,
) -> None:
    """The event loop never waits on SQLite's lock: while another connection holds the write
    lock, ``on_loop`` work waits in the thread, the loop keeps running, and the work commits
    once the lock is free."""
    db, path = await sqlite_database(tmp_path)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        await db._transact(lambda conn: add_user(conn, "early"), on_loop=True)
        other.execute("BEGIN IMMEDIATE")
        ticker = asyncio.create_task(tick())
        work = asyncio.create_task(db.write(lambda conn: add_user(conn, "late")))
        await asyncio.sleep(0.5)
        assert not work.done()
        assert ticks >= 5  # (blocking on the lock would have frozen the loop for 15 s)
        other.execute("COMMIT")
        assert await work == "late"
        ticker.cancel()
        assert await all_uids(db) == {"early", "late"}
    finally:
        other.close()
        await db.close()


async def test_the_wal_is_checkpointed_in_the_background(tmp_path: Path) -> None:
    """The synchronous connection does not checkpoint as it commits; every few commits a
    checkpoint copies the WAL into the database file off the event loop."""
    db, path = await sqlite_database(tmp_path)
    try:
        before = path.stat().st_size
        for uid in (f"u{n}" + "x" * 100 for n in range(CHECKPOINT_EVERY - 1)):
            await db.write_alone(partial(add_user, uid=uid))
        assert path.stat().st_size == before  # everything so far is only in the WAL
        for uid in (f"v{n}" + "x" * 100 for n in range(CHECKPOINT_EVERY)):
            await db.write(partial(add_user, uid=uid))
    finally:
        await db.close()  # waits for the checkpoint in the thread
    assert path.stat().st_size > before


async def test_batch_writer_runs_sync_works_with_a_refusal_or_crash_kept_to_its_own(
    db: Database,
) -> None:
    """Works of concurrent callers share a transaction; a ``NudgeError`` is that caller's answer
    and the others commit; any other error rolls the batch back and each work runs again alone."""

    def add(uid: str, refusal: NudgeError | None = None, bug: bool = False) -> Work:
        def work(conn: Connection) -> str:
            if refusal is not None:  # works validate before they write
                raise refusal
            conn.execute(
                User.__table__.insert().values(
                    uid=uid, name=uid, token_hash=uid + "h", created_at=0.0
                )
            )
            if bug:
                raise RuntimeError("bug")
            return uid

        return work

    writer = BatchWriter(partial(db._transact, on_loop=True))
    writer.start()
    try:
        first = await asyncio.gather(
            writer.run(add("a")),
            writer.run(add("refused", refusal=NotFound("no"))),
            writer.run(add("b")),
            return_exceptions=True,
        )
        second = await asyncio.gather(
            writer.run(add("c")),
            writer.run(add("broken", bug=True)),
            writer.run(add("d")),
            return_exceptions=True,
        )
    finally:
        await writer.aclose()
    assert first[0] == "a" and first[2] == "b" and isinstance(first[1], NotFound)
    assert second[0] == "c" and second[2] == "d" and isinstance(second[1], RuntimeError)
    assert await all_uids(db) == {"a", "b", "c", "d"}  # the crashed work's insert was rolled back


async def test_acceptor_batches_concurrent_requests_into_one_answer_each(db: Database) -> None:
    from nudge.core import apps
    from nudge.core.manifest import Manifest

    def seed(conn: Connection) -> dict[str, str]:
        app = apps.create_app(conn, Manifest(name="Batch"))
        for i in range(20):
            users.create_user(conn, users.NewUser(uid=f"u{i}", name="x"))
        for i in range(19):  # u19 has not installed the app
            users.install_app(conn, f"u{i}", app["app_id"], [])
        return app

    app = await db.write(seed)
    acceptor = Acceptor(db, Limits(100, 60), lock_rows=db.is_postgres)
    acceptor.start()
    try:
        results = await asyncio.gather(
            *(
                acceptor.accept(
                    NotificationRequest(app_id=app["app_id"], uid=f"u{i}", message=f"m{i}")
                )
                for i in range(20)
            ),
            return_exceptions=True,
        )
    finally:
        await acceptor.aclose()
    assert isinstance(results[19], NotFound)
    ids = [r.notification_id for r in results[:19]]  # type: ignore[union-attr]
    assert len(set(ids)) == 19
    count = select(func.count()).select_from(Notification)
    assert await db.query(lambda conn: conn.scalar(count)) == 19
