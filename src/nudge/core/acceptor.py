"""Batches concurrent notification requests into one ``accept_batch`` call each.

While one batch is being written, the requests that arrive queue up and form the next one; each
batch is one transaction (:meth:`~nudge.store.db.Database.write_now`), so its callers are
answered only after their rows are committed.
"""

from __future__ import annotations

from functools import partial

from nudge.core.notifications import Accepted, Limits, NotificationRequest, accept_batch
from nudge.errors import NudgeError
from nudge.store.batch import RequestBatcher
from nudge.store.db import Database


class Acceptor:
    def __init__(
        self, db: Database, limits: Limits, *, lock_rows: bool, max_batch: int = 256
    ) -> None:
        self.db = db
        self.limits = limits
        self.lock_rows = lock_rows
        self._batcher: RequestBatcher[NotificationRequest, Accepted | NudgeError] = RequestBatcher(
            self._process, max_batch=max_batch, name="nudge-acceptor"
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
        return await self.db.write_now(
            partial(accept_batch, requests=requests, limits=self.limits, lock_rows=self.lock_rows)
        )
