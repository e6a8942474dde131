"""Retention: old notifications, with their deliveries, are deleted.

Without it the two largest tables grow by every notification ever sent (about 2 KB each). What
is older than ``NUDGE_NOTIFICATION_RETENTION_S`` (90 days; 0 keeps everything) goes, in chunks of
one short transaction each, so acceptance never waits long for the write lock. The app chat and
the conversations stay: they are the user's history, which ``{{user_chat}}`` and
``{{user_context}}`` read. Traces have their own, shorter retention (``NUDGE_TRACE_RETENTION_S``).
The hourly windows' minute buckets go once no window reads them (``WINDOW_KEEP_S``), whatever
the notifications' retention.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Protocol

from sqlalchemy import Connection

from nudge.store.db import Database
from nudge.store.notifications import prune_chunk, prune_windows

log = logging.getLogger("nudge.retention")

CHUNK = 1000
INTERVAL_S = 300.0
# A window reads its last 61 minutes; buckets are kept an hour longer, so that a process whose
# clock lags behind the others' still finds every bucket of its window.
WINDOW_KEEP_S = 2 * 3600.0


class Prune(Protocol):
    def __call__(self, conn: Connection, *, limit: int) -> int: ...


async def prune_in_chunks(db: Database, prune: Prune, chunk: int = CHUNK) -> int:
    """Run ``prune(conn, limit=chunk)`` (it deletes up to ``chunk`` rows), one short transaction
    after another, until a chunk comes back short; returns how many rows went."""
    total = 0
    while True:
        removed = await db.write_alone(partial(prune, limit=chunk))
        total += removed
        if removed < chunk:
            return total


async def prune_notifications(db: Database, older_than: float, *, chunk: int = CHUNK) -> int:
    """Delete every notification made before ``older_than``; returns how many."""
    return await prune_in_chunks(db, partial(prune_chunk, older_than=older_than), chunk)


async def prune_window_buckets(db: Database, now: float, *, chunk: int = CHUNK) -> int:
    """Delete the hourly windows' buckets older than ``WINDOW_KEEP_S``; returns how many."""
    return await prune_in_chunks(db, partial(prune_windows, older_than=now - WINDOW_KEEP_S), chunk)


class Housekeeper:
    """Runs the retention every few minutes in the worker roles (notifications only when
    ``retention_s`` is above 0)."""

    def __init__(self, db: Database, retention_s: float, *, interval_s: float = INTERVAL_S):
        self.db = db
        self.retention_s = retention_s
        self.interval_s = interval_s
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        self._stopped.set()

    async def run(self) -> None:
        while not self._stopped.is_set():
            try:
                now = time.time()
                buckets = await prune_window_buckets(self.db, now)
                removed = 0
                if self.retention_s > 0:
                    removed = await prune_notifications(self.db, now - self.retention_s)
            except Exception:  # the database may be away for a moment; try again next time
                log.exception("pruning old notifications failed; retrying later")
            else:
                if removed or buckets:
                    log.info(
                        "old notifications removed",
                        extra={"count": removed, "window_buckets": buckets},
                    )
            try:
                await asyncio.wait_for(self._stopped.wait(), self.interval_s)
            except TimeoutError:
                pass
