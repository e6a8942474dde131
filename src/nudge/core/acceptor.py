"""Batches concurrent notification requests into one ``accept_batch`` call each.

While a batch is being written, the requests that arrive queue up and form the next one; each
batch is one transaction (:meth:`~nudge.store.db.Database.write_keyed`), so its callers are
answered only after their rows are committed. On PostgreSQL several batches are written at once
(:attr:`~nudge.store.db.Database.overlap`); the install rows they lock keep the batches of one
(app, user) in turn, so the hourly limit and the duplicate window stay exact.
"""

from __future__ import annotations

import logging
from functools import partial

from sqlalchemy.exc import IntegrityError

from nudge.core.notifications import Accepted, Limits, NotificationRequest, accept_batch
from nudge.errors import NudgeError
from nudge.store.batch import RequestBatcher
from nudge.store.db import Database, sqlstate

log = logging.getLogger("nudge.acceptor")
UNIQUE_VIOLATION = "23505"
ATTEMPTS = 3  # of a batch that keeps meeting concurrent inserts of its idempotency keys


class Acceptor:
    def __init__(
        self, db: Database, limits: Limits, *, lock_rows: bool, max_batch: int = 256
    ) -> None:
        self.db = db
        self.limits = limits
        self.lock_rows = lock_rows
        self._batcher: RequestBatcher[NotificationRequest, Accepted | NudgeError] = RequestBatcher(
            self._process, max_batch=max_batch, name="nudge-acceptor", concurrency=db.overlap
        )

    def start(self) -> None:
        self._batcher.start()

    async def aclose(self) -> None:
        await self._batcher.aclose()

    async def accept(self, request: NotificationRequest) -> Accepted:
        """Durably accept one notification; raises its refusal (a ``NudgeError``)."""
        result = await self._batcher.submit(request)
        if isinstance(result, NudgeError):
            raise result
        return result

    async def _process(self, requests: list[NotificationRequest]) -> list[Accepted | NudgeError]:
        """One transaction for the batch. Two batches of different users may carry the same
        idempotency key of one app: the second one's insert then fails on the unique index once
        the first commits, and the batch is run again, where its lookups find the first
        notification and answer it as the duplicate it is."""
        work = partial(
            accept_batch, requests=requests, limits=self.limits, lock_rows=self.lock_rows
        )
        attempt = 1
        while True:
            try:
                return await self.db.write_keyed(work)
            except IntegrityError as exc:
                if attempt == ATTEMPTS or sqlstate(exc) != UNIQUE_VIOLATION:
                    raise
                log.info("a concurrent batch took an idempotency key; running the batch again")
                attempt += 1
