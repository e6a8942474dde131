"""Batches concurrent notification requests into one ``accept_batch`` call each.

While one batch is being written, the requests that arrive queue up and form the next one; the
batch runs as a single piece of work of the shared :class:`~nudge.store.batch.BatchWriter`, so its
callers are answered only after their rows are committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from nudge.core.errors import NudgeError
from nudge.core.notifications import Accepted, Limits, NotificationRequest, accept_batch
from nudge.store.batch import BatchWriter

log = logging.getLogger("nudge.accept")


class Acceptor:
    def __init__(
        self, writer: BatchWriter, limits: Limits, *, lock_rows: bool, max_batch: int = 256
    ) -> None:
        self.writer = writer
        self.limits = limits
        self.lock_rows = lock_rows
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[NotificationRequest, asyncio.Future[Any]]] = (
            asyncio.Queue()
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="nudge-acceptor")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def accept(self, request: NotificationRequest) -> Accepted:
        """Durably accept one notification; raises its refusal (a ``NudgeError``)."""
        future: asyncio.Future[Accepted | NudgeError] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((request, future))
        result = await future
        if isinstance(result, NudgeError):
            raise result
        return result

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            requests = [request for request, _ in batch]

            async def work(conn: Any, requests: list[NotificationRequest] = requests) -> Any:
                return await accept_batch(conn, requests, self.limits, lock_rows=self.lock_rows)

            try:
                results = await self.writer.run(work)
            except Exception as exc:
                log.exception("accepting a batch failed", extra={"size": len(batch)})
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
