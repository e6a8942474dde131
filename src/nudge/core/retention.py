"""Retention: old notifications, with their deliveries, are deleted.

Without it the two largest tables grow by every notification ever sent (about 2 KB each). What
is older than ``NUDGE_NOTIFICATION_RETENTION_S`` (90 days; 0 keeps everything) goes, in chunks of
one short transaction each, so acceptance never waits long for the write lock. The app chat and
the conversations stay: they are the user's history, which ``{{user_chat}}`` and
``{{user_context}}`` read. Traces have their own, shorter retention (``NUDGE_TRACE_RETENTION_S``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Protocol

from sqlalchemy import Connection

from nudge.store.db import Database
from nudge.store.notifications import prune_chunk

log = logging.getLogger("nudge.retention")

CHUNK = 1000
INTERVAL_S = 300.0


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


class Housekeeper:
    """Runs the retention every few minutes in the worker roles."""

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
                removed = await prune_notifications(self.db, time.time() - self.retention_s)
            except Exception:  # the database may be away for a moment; try again next time
                log.exception("pruning old notifications failed; retrying later")
            else:
                if removed:
                    log.info("old notifications removed", extra={"count": removed})
            try:
                await asyncio.wait_for(self._stopped.wait(), self.interval_s)
            except TimeoutError:
                pass
