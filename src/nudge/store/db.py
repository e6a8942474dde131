"""One process's database: its engines and the ways in (write, write_now, write_keyed,
write_alone, query).

SQLite: WAL, ``synchronous=NORMAL`` and a busy timeout. Writes start with ``BEGIN IMMEDIATE``
so that several processes sharing the file queue for the write lock instead of failing on a
read-to-write upgrade; reads use a second engine with ordinary deferred transactions.
PostgreSQL uses two engines. Its writes overlap: each batcher keeps :attr:`Database.overlap`
transactions in flight (SQLite: one), and a transaction that PostgreSQL ends with a deadlock or
a serialization failure is run again. On the main engine statements are planned for their
values every time (``plan_cache_mode``): a prepared statement's generic plan, made while a table
was nearly empty, kept scanning it whole as it grew (the duplicate lookup took 15-23 ms at
10,000 notifications, 1.2 ms planned each time) until the next ANALYZE. The hot paths that read
only by key (acceptance, the delivery queue) run on :attr:`Database.keyed_engine`, whose
connections plan no scans of a whole table and keep generic plans.

Write work is synchronous SQLAlchemy work. On SQLite it runs on the synchronous driver in one
trip: through aiosqlite every statement costs four round trips between the event loop and
aiosqlite's thread (cursor, execute, fetch, close). The group-committed writes of :meth:`write`
run on the event loop itself when the file's write lock is free, long work (:meth:`write_alone`)
in a thread of its own. That synchronous connection never checkpoints the WAL as it commits
(that copies pages and fsyncs); a separate connection does it in the thread every few commits.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from nudge.store.batch import BatchWriter

T = TypeVar("T")
log = logging.getLogger("nudge.store")
BUSY_TIMEOUT_MS = 15_000
# PostgreSQL errors after which the whole transaction is run again: its work lost a race, not a
# check (serialization failure, deadlock).
RETRIED_STATES = frozenset({"40001", "40P01"})
RETRIES = 3  # attempts of a transaction that keeps losing races
OVERLAP_SHARE = 4  # PostgreSQL: each batcher's transactions in flight, a quarter of the pool
# PostgreSQL: statements kept prepared per connection (the driver's default keeps 100). Each
# length of an ``IN`` list is a statement of its own: the acceptance batch's lookups alone make
# about 100, and a statement prepared again costs an extra round trip.
PREPARED_PER_CONNECTION = 1024
CHECKPOINT_EVERY = 16  # commits of the synchronous connection (a batch writes ~50-100 pages)


class _UseThread(Exception):
    """The work cannot run on the event loop now (another process holds the write lock)."""


def sqlstate(exc: BaseException) -> str | None:
    """PostgreSQL's SQLSTATE of a driver error (``"23505"``: a unique violation); None on
    SQLite and for other errors."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own BEGIN is deferred: ours is sent by the "begin" event of the read engine
    # and by Database._transaction on the synchronous connection.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # first: the next one may wait
    # WAL + synchronous=NORMAL keeps every commit across a process crash (kill -9);
    # only a power loss may drop the last transactions.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def ensure_sqlite_dir(url: str) -> None:
    """Create the folder of a SQLite database file (the default lives in ./nudge-data)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


def _in_transaction(conn: Connection, work: Callable[[Connection], T]) -> T:
    """``work`` in a transaction begun and ended inside the one trip into the synchronous
    world (``AsyncConnection.run_sync``): its begin and commit as asyncio calls of their own
    cost each PostgreSQL acceptance batch two more."""
    with conn.begin():
        return work(conn)


def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")


def _postgres_engine(
    url: str, echo: bool, pool_size: int, max_overflow: int, *, keyed: bool = False
) -> AsyncEngine:
    """No pre-ping: it costs a round trip per checkout; a connection that died is detected on
    use, invalidated by the pool, and the request answered 503. With ``keyed``: connections
    that plan neither sequential nor bitmap scans (see ``Database.keyed_engine``); there a
    prepared statement may keep its generic plan (PostgreSQL's default), which then reads by
    an index too, instead of being planned again at every run (``force_custom_plan``: 10-15 %
    of PostgreSQL's CPU per accepted notification)."""
    settings = {"plan_cache_mode": "force_custom_plan"}
    if keyed:
        settings = {"enable_seqscan": "off", "enable_bitmapscan": "off"}
    return create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        connect_args={
            "server_settings": settings,
            "prepared_statement_cache_size": PREPARED_PER_CONNECTION,
        },
    )


def _sqlite_engine(url: str, echo: bool) -> AsyncEngine:
    engine = create_async_engine(url, echo=echo)
    event.listen(engine.sync_engine, "connect", _sqlite_connect)
    event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


class Database:
    """The engines of one process, made from the database URL."""

    def __init__(
        self, url: str, *, echo: bool = False, pool_size: int = 10, max_overflow: int = 10
    ) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()  # "sqlite" | "postgresql"
        # Write transactions each batcher keeps in flight (acceptance, the group commit, the
        # delivery worker's claims): SQLite has one writer; on PostgreSQL a share of the pool.
        self.overlap = 1
        self.keyed_engine: AsyncEngine | None = None  # PostgreSQL only
        self._write_lock: asyncio.Lock | None = None
        self._sync_engine: Engine | None = None
        self._sync_thread: ThreadPoolExecutor | None = None
        if self.dialect == "sqlite":
            ensure_sqlite_dir(url)
            # Reads only: writes go through the synchronous driver (_transaction).
            self.engine = self.read_engine = _sqlite_engine(url, echo)
            self._write_lock = asyncio.Lock()
            # One connection (and its statement cache) serves every trip, on the event loop or in
            # the one thread, taking turns under the write lock.
            self._sync_engine = create_engine(
                parsed.set(drivername="sqlite"),
                echo=echo,
                # The batch's lookups have IN lists of many lengths, each its own statement to
                # prepare: keep them all prepared (the driver's default keeps 128).
                connect_args={"check_same_thread": False, "cached_statements": 1024},
            )
            # No "begin" listener: _transaction emits BEGIN IMMEDIATE on the driver itself.
            event.listen(self._sync_engine, "connect", _sqlite_connect)
            event.listen(self._sync_engine, "connect", _no_autocheckpoint)
            self._sync_conn: Connection | None = None  # checked out once, kept (see _transaction)
            self._sync_thread = ThreadPoolExecutor(1, thread_name_prefix="nudge-sqlite")
            self._sqlite_path = parsed.database or ":memory:"
            self._commits = 0
            self._connected = False  # connecting may wait on a lock: the first trip is threaded
            self._checkpoint: asyncio.Future[None] | None = None
        elif self.dialect == "postgresql":
            self.engine = _postgres_engine(url, echo, pool_size, max_overflow)
            self.read_engine = self.engine
            self.overlap = max(1, pool_size // OVERLAP_SHARE)
            # Acceptance and the delivery queue's claims and results read rows only by their
            # keys, in tables that grow by thousands of rows a second: their own connections
            # never plan a scan of a whole table or a bitmap. Planned from statistics that still
            # saw a small table, the duplicate lookup scanned every notification; a bitmap scan
            # of ix_deliveries_due read and sorted the whole backlog for every claim (35-45 ms
            # per claim of 75 draining 20,000, 2.7 ms by the index in order) and, never marking
            # dead index entries, let the drained rows' 'sending' entries pile up for every
            # write of results to read again. As many connections as can be in use at once (an
            # acceptance, a claim loop and a write of results per overlap), no overflow.
            self.keyed_engine = _postgres_engine(url, echo, 3 * self.overlap, 0, keyed=True)
        else:
            raise ValueError(
                f"unsupported database URL {url!r}: use sqlite+aiosqlite:/// or postgresql+asyncpg://"
            )
        self._writer = BatchWriter(partial(self._transact, on_loop=True), concurrency=self.overlap)

    def start(self) -> None:
        """Start group commit: from now on :meth:`write` batches concurrent work."""
        self._writer.start()

    async def write(self, work: Callable[[Connection], T]) -> T:
        """The write path: run short synchronous ``work`` in a write transaction shared with
        the other writes waiting now (group commit); returns once that transaction committed.

        An expected refusal (a ``NudgeError``) raised by ``work`` rolls back nothing of the
        others' work (so work must check before it writes); any other error fails the batch and
        each work is retried alone. Where it runs (the event loop or SQLite's thread) is decided
        here, not by the caller."""
        return await self._writer.run(work)

    async def write_now(self, work: Callable[[Connection], T]) -> T:
        """Short write ``work`` in a transaction of its own, at once: for work that already
        batches its callers (acceptance, ingestion, the delivery queue's claims and results) or
        that a caller waits on (the proactive rate claim, request counters). Queueing it behind
        :meth:`write`'s group commit as well, which gathers while writes keep arriving, cost
        direct acceptance 20-35 % more CPU and doubled the pipeline's latency under load. Where
        it runs is decided as for :meth:`write` (the event loop when SQLite's lock is free)."""
        return await self._transact(work, on_loop=True)

    async def write_keyed(self, work: Callable[[Connection], T]) -> T:
        """:meth:`write_now` for work that reads rows only by their keys (acceptance): on
        PostgreSQL on :attr:`keyed_engine`'s connections."""
        return await self._transact(work, on_loop=True, engine=self.keyed_engine)

    async def write_alone(self, work: Callable[[Connection], T]) -> T:
        """Long write ``work`` (pruning, imports) in a transaction of its own, off the event loop
        on SQLite, so that it never holds up the short writes of :meth:`write` for long."""
        return await self._transact(work)

    async def query(self, work: Callable[[Connection], T]) -> T:
        """The read path: run synchronous ``work`` on a read connection (nothing is committed)."""
        async with self.read_engine.connect() as conn:
            return await conn.run_sync(work)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    async def _transact(
        self,
        work: Callable[[Connection], T],
        *,
        on_loop: bool = False,
        engine: AsyncEngine | None = None,
    ) -> T:
        """Run ``work`` in one write transaction: committed if it returns, rolled back if it raises.

        SQLite: on the synchronous driver in this database's own thread, the writers of this
        process taking turns on an asyncio lock (far cheaper than SQLite's busy handler, which
        sleeps in steps of up to 100 ms; other processes still wait through ``busy_timeout``).
        With ``on_loop`` (short, bounded work) it runs on the event loop itself when the file's
        write lock is free at once, sparing the trip to the thread and back (futures, wake-ups,
        GIL hand-offs); if another process holds the lock, the work waits for it in the thread,
        so the event loop never waits on a lock. PostgreSQL: ``run_sync`` on an async connection,
        run again (up to ``RETRIES`` times) when PostgreSQL ends it for a deadlock or a
        serialization failure: the work must not count on anything it did before it raised.
        ``engine``: PostgreSQL's engine to use instead of :attr:`engine`.
        """
        if self._sync_engine is None or self._write_lock is None:
            attempt = 1
            while True:
                try:
                    async with (engine or self.engine).connect() as conn:
                        return await conn.run_sync(_in_transaction, work)
                except DBAPIError as exc:
                    if attempt == RETRIES or sqlstate(exc) not in RETRIED_STATES:
                        raise
                    log.info(
                        "a transaction lost a race; running it again",
                        extra={"sqlstate": sqlstate(exc), "attempt": attempt},
                    )
                    attempt += 1
        async with self._write_lock:
            try:
                if not (on_loop and self._connected):
                    raise _UseThread
                result = self._transaction(work, wait=False)
            except _UseThread:
                result = await asyncio.get_running_loop().run_in_executor(
                    self._sync_thread, self._transaction, work
                )
            self._commits += 1
            if self._commits % CHECKPOINT_EVERY == 0 and self._checkpoint is None:
                self._checkpoint = asyncio.get_running_loop().run_in_executor(
                    self._sync_thread, self._checkpoint_wal
                )
                self._checkpoint.add_done_callback(self._checkpoint_done)
            return result

    def _transaction(self, work: Callable[[Connection], T], wait: bool = True) -> T:
        """One transaction on the synchronous connection.

        The connection is checked out once and kept (trips take turns under the write lock), and
        BEGIN IMMEDIATE goes to the driver directly (a pool checkout and SQLAlchemy's "begin"
        event per transaction cost the event loop measurably). SQLAlchemy's own transaction on
        top keeps its bookkeeping; its commit or rollback ends the driver's transaction."""
        conn = self._sync_connection()
        raw: Any = conn.connection.driver_connection
        if not wait:
            raw.execute("PRAGMA busy_timeout=0")
        try:
            raw.execute("BEGIN IMMEDIATE")  # takes the file's write lock
        except sqlite3.OperationalError as exc:
            if not wait and exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                raise _UseThread from None
            raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc
        finally:
            if not wait:
                raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._connected = True
        try:
            with conn.begin():
                return work(conn)
        finally:
            if raw.in_transaction:  # e.g. SQLAlchemy's own rollback failed: never leave it open
                raw.rollback()

    def _sync_connection(self) -> Connection:
        conn = self._sync_conn
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                conn.close()
            assert self._sync_engine is not None
            conn = self._sync_conn = self._sync_engine.connect()
        return conn

    def _checkpoint_wal(self) -> None:
        """Copy the WAL's committed pages into the database file, without blocking anyone."""
        with closing(sqlite3.connect(self._sqlite_path, timeout=BUSY_TIMEOUT_MS / 1000)) as raw:
            raw.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _checkpoint_done(self, future: asyncio.Future[None]) -> None:
        self._checkpoint = None
        if not future.cancelled() and future.exception() is not None:
            log.warning("WAL checkpoint failed", extra={"error": repr(future.exception())})

    async def ping(self) -> None:
        await self.query(lambda conn: conn.execute(text("SELECT 1")))

    async def close(self) -> None:
        await self._writer.aclose()
        await self.engine.dispose()
        if self.keyed_engine is not None:
            await self.keyed_engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
        if self._sync_engine is not None and self._sync_thread is not None:
            if self._sync_conn is not None:
                await asyncio.get_running_loop().run_in_executor(
                    self._sync_thread, self._sync_conn.close
                )
                self._sync_conn = None
            await asyncio.get_running_loop().run_in_executor(
                self._sync_thread, self._sync_engine.dispose
            )
            self._sync_thread.shutdown()
            self._sync_engine = self._sync_thread = None
