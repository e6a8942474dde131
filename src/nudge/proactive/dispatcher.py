"""The webhook dispatcher (contract.md §2): when each conversation's new segments go to its apps.

At most once per ``NUDGE_WEBHOOK_FLUSH_INTERVAL_S`` per conversation, to every installed app with
``triggers_on: transcript_processed`` (:mod:`nudge.proactive.calls`); a finished conversation's
last flush also sends the ``memory_creation`` webhooks, and silent conversations are ended here."""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from functools import partial
from typing import Any

from sqlalchemy import Connection

from nudge.config import Settings
from nudge.core.retention import prune_in_chunks
from nudge.metrics import Metrics
from nudge.net.webhooks import WebhookClient
from nudge.proactive.calls import MEMORY, REALTIME, WebhookCalls
from nudge.proactive.flushes import INGEST_BATCH, Flush, claim_flushes
from nudge.proactive.ingest import finish_silent
from nudge.proactive.pipeline import Pipeline
from nudge.store.db import Database
from nudge.store.traces import prune_traces

log = logging.getLogger("nudge.dispatcher")

__all__ = ["INGEST_BATCH", "Dispatcher"]


class Dispatcher:
    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        webhooks: WebhookClient,
        pipeline: Pipeline,
        metrics: Metrics,
        batch_size: int = 200,
        max_in_flight: int = 5000,
    ) -> None:
        self.settings = settings
        self.db = db
        self.pipeline = pipeline
        self.interval_s = settings.webhook_flush_interval_s
        self.calls = WebhookCalls(
            db, webhooks, pipeline, metrics, disable_after_s=settings.webhook_disable_after_s
        )
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._last_prune = 0.0
        self._gates: dict[str, float] = {}  # conversation -> its next window, from our claims
        self._timers: list[float] = []  # heap of window openings to look at

    def wake(self, conversation_id: str | None = None) -> None:
        """New segments (or a finished conversation) in this process. A conversation whose
        current window already had its call is looked at when its next window opens; anything
        else at once."""
        gate = self._gates.get(conversation_id) if conversation_id is not None else None
        if gate is not None and gate > time.time():
            heapq.heappush(self._timers, gate)
        else:
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        log.info("dispatcher started", extra={"interval_s": self.settings.webhook_flush_interval_s})
        while not self._stopping:
            try:
                claimed = await self.step()
            except Exception:
                log.exception("dispatcher step failed; retrying")
                claimed = 0
                await asyncio.sleep(1.0)
            if claimed >= self.batch_size or self._stopping:
                continue
            await self._sleep()

    def _timer_due(self) -> bool:
        now, due = time.time(), False
        while self._timers and self._timers[0] <= now:
            heapq.heappop(self._timers)
            due = True
        return due

    async def _sleep(self) -> None:
        """Until woken, a window opens for a conversation waiting here, or the poll interval (which
        finds segments stored by other processes) is up."""
        if self._timer_due():
            return
        delay = self.settings.dispatcher_poll_interval_s
        if self._timers:
            delay = min(delay, self._timers[0] - time.time())
        try:
            await asyncio.wait_for(self._wake.wait(), max(delay, 0.0))
        except TimeoutError:
            pass
        self._wake.clear()
        self._timer_due()

    async def step(self) -> int:
        """End silent conversations, claim due ones and start their calls; returns how many
        conversations were claimed."""
        self._wake.clear()
        if len(self._in_flight) >= self.max_in_flight:
            log.warning("webhook calls backlogged", extra={"in_flight": len(self._in_flight)})
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
        now = time.time()
        flushes = await self.db.write(partial(self._claim, now=now))
        self.start(flushes)
        await self._maybe_prune(now)
        return len(flushes)

    def _claim(self, conn: Connection, now: float) -> list[Flush]:
        silence_s = self.settings.conversation_silence_s
        if silence_s > 0:
            ended = finish_silent(conn, now, silence_s=silence_s, limit=self.batch_size)
            if ended:
                log.info("silent conversations ended", extra={"count": len(ended)})
        return claim_flushes(conn, now, limit=self.batch_size, interval_s=self.interval_s)

    def open_now(self, conversation_ids: list[str]) -> list[str]:
        """Those of the conversations that just took segments whose window is open: ingestion
        flushes them in its own transaction (saves a round through the dispatcher loop) and hands
        them to :meth:`start` after the commit; the others get a timer from :meth:`wake`."""
        now = time.time()
        return [cid for cid in conversation_ids if self._gates.get(cid, 0.0) <= now]

    def start(self, flushes: list[Flush]) -> None:
        """Start the calls of claimed flushes (after their transaction committed)."""
        for flush in flushes:
            self._gates[flush.conversation_id] = flush.gate
            if flush.segments:
                for app in flush.apps:
                    if app.triggers_on == REALTIME:
                        self._spawn(self.calls.realtime(app, flush))
            if flush.conversation is not None:
                memory = [app for app in flush.apps if app.triggers_on == MEMORY]
                if memory or flush.summary_pending:
                    self._spawn(self.calls.finished(flush, memory))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _maybe_prune(self, now: float) -> None:
        if now - self._last_prune < 300:
            return
        self._last_prune = now
        self._gates = {cid: gate for cid, gate in self._gates.items() if gate > now}
        cutoff = now - self.settings.trace_retention_s
        # Not through the batch writer: short transactions of their own, off the event loop.
        removed = await prune_in_chunks(self.db, partial(prune_traces, older_than=cutoff))
        if removed:
            log.info("old traces removed", extra={"count": removed})

    async def aclose(self, timeout: float = 5.0) -> None:
        """Stop claiming; let calls in flight finish for a moment, then cancel them."""
        self.stop()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=timeout)
        for task in list(self._in_flight):
            task.cancel()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=1.0)
        await self.calls.traces.aclose(timeout)
