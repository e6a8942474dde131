"""Group commit: many small write transactions share one commit.

Every accepted notification must be on disk before its 200 goes out. One commit per request caps
SQLite at the fsync/commit rate, so concurrent requests queue their work here and a single task runs
a batch of them in one transaction. Each piece of work validates before it writes, so an expected
refusal (a ``NudgeError``) in one does not disturb the others; any other error fails the batch
(its transaction rolls back) and :class:`RequestBatcher` retries its requests one by one, so one
bad request cannot fail its neighbours.

Works are synchronous (``Callable[[Connection], T]``) and short: a whole batch is one transaction,
on SQLite on the event loop when the write lock is free. Run in SQLite's thread instead, a batch
held the process's write lock while it competed with the event loop for the GIL, and the claims,
acceptances and deliveries behind it waited. Long work (pruning) does not belong here.

SQLite has one writer, so one batch is written at a time. PostgreSQL takes concurrent
transactions: there several batches are in flight at once (``concurrency``, see
``Database.overlap``), so that the process does not sit idle through each batch's round trips
and commit while requests queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

from nudge.errors import NudgeError

T = TypeVar("T")
Req = TypeVar("Req")
Res = TypeVar("Res")
Work = Callable[[Connection], Any]
log = logging.getLogger("nudge.store")


class RequestBatcher(Generic[Req, Res]):
    """Queues requests from concurrent callers and hands them to ``process`` in batches.

    While ``concurrency`` batches are processed, the requests that arrive queue up and form the
    next one. ``process`` answers a whole batch, one result per request, in order (a refusal is a
    result too). If it raises, the batch's requests are processed again one at a time and only the
    one that fails alone gets the error. Before :meth:`start` (tools, tests) each request is
    processed alone.
    """

    def __init__(
        self,
        process: Callable[[list[Req]], Awaitable[list[Res]]],
        *,
        max_batch: int,
        name: str,
        concurrency: int = 1,
    ) -> None:
        self.process = process
        self.max_batch = max_batch
        self.name = name
        self.concurrency = max(1, concurrency)
        self._queue: asyncio.Queue[tuple[Req, asyncio.Future[Res]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._answering: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in self._answering:
            task.cancel()
        if self._answering:
            await asyncio.wait(self._answering)

    async def submit(self, request: Req) -> Res:
        if self._task is None:
            (result,) = await self.process([request])
            return result
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((request, future))
        return await future

    async def _loop(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        while True:
            await slots.acquire()  # requests gather in the queue while every slot is busy
            batch = [await self._queue.get()]
            # Let the requests already on their way join this batch: take turns of the event loop
            # (each runs the handlers of requests whose data came in) while new ones keep coming.
            waiting = -1
            while waiting != self._queue.qsize() < self.max_batch:
                waiting = self._queue.qsize()
                await asyncio.sleep(0)
            # Share what waits among the free slots: a closed loop of callers answered together
            # comes back together, and would otherwise stay one batch however many slots idle.
            free = self.concurrency - len(self._answering)
            size = min(self.max_batch, -(-(self._queue.qsize() + 1) // free))
            while len(batch) < size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            task = asyncio.create_task(self._answer(batch), name=self.name)
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
            task.add_done_callback(lambda _: slots.release())

    async def _answer(self, batch: list[tuple[Req, asyncio.Future[Res]]]) -> None:
        try:
            results = await self.process([request for request, _ in batch])
        except Exception as exc:
            if len(batch) > 1:
                log.warning(
                    "a batch failed; retrying its requests one by one",
                    extra={"batcher": self.name, "size": len(batch), "error": repr(exc)},
                )
                for item in batch:
                    await self._answer([item])
                return
            log.exception("a request failed", extra={"batcher": self.name})
            results = []
            future = batch[0][1]
            if not future.done():
                future.set_exception(exc)
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    value: Any  # the work's result, or the exception it raised


class BatchWriter:
    """Runs pieces of write work from concurrent callers, a batch of them per transaction."""

    def __init__(
        self,
        transact: Callable[[Callable[[Connection], Any]], Awaitable[Any]],
        *,
        max_batch: int = 128,
        concurrency: int = 1,
    ) -> None:
        self._transact = transact
        self._batcher: RequestBatcher[Work, _Outcome] = RequestBatcher(
            self._process, max_batch=max_batch, name="nudge-batch-writer", concurrency=concurrency
        )

    def start(self) -> None:
        self._batcher.start()

    async def aclose(self) -> None:
        await self._batcher.aclose()

    async def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` inside a shared transaction; returns once that transaction committed."""
        outcome = await self._batcher.submit(work)
        if not outcome.ok:
            raise outcome.value
        result: T = outcome.value
        return result

    async def _process(self, batch: list[Work]) -> list[_Outcome]:
        def run_all(conn: Connection) -> list[_Outcome]:
            outcomes: list[_Outcome] = []
            for work in batch:
                try:
                    outcomes.append(_Outcome(True, work(conn)))
                except NudgeError as exc:
                    outcomes.append(_Outcome(False, exc))
            return outcomes

        return await self._transact(run_all)  # type: ignore[no-any-return]
