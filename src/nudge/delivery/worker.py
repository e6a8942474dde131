"""The delivery worker: claim due deliveries, send them through their providers, record results.

It runs as a pipeline so that no stage waits for another: the claim loop keeps up to
``concurrency`` sends in flight (claiming the next batch while earlier ones are still sending),
each send runs on its own, and a recorder writes finished results in batches (one transaction for
whatever finished while the previous write ran). A slow provider call therefore holds up only its
own delivery, never a batch. On PostgreSQL, where every claim and every write of results waits
for its commit to reach the disk, :attr:`~nudge.store.db.Database.overlap` claim loops and as many
writes of results run at once (SQLite: one of each).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from nudge.bus.local import EventBus
from nudge.delivery import held, queue
from nudge.delivery.held import Send
from nudge.delivery.providers.base import Outcome, Provider, SendResult
from nudge.delivery.queue import DeliveryRetry, Job
from nudge.metrics import Metrics
from nudge.store.db import Database

log = logging.getLogger("nudge.delivery")

RECORD_BATCH = 1000  # results per transaction at most
ALERT_LOG_INTERVAL_S = 60.0  # one "provider alert" log line per provider per minute
CLAIM_GAP_S = 0.02  # after wake-ups, claim at most this often on average (see _gather_work)
CLAIM_BURST = 8  # ... but this many claims may follow wake-ups at once after a quiet spell
HELD_CHECK_S = 0.25  # while busy, look for held pushes whose window ended this often


class DeliveryWorker:
    def __init__(
        self,
        db: Database,
        bus: EventBus,
        providers: Mapping[str, Provider],
        unconfigured: Mapping[str, str],
        *,
        worker_id: str,
        policy: DeliveryRetry,
        metrics: Metrics,
        batch_size: int = 200,
        concurrency: int = 256,
        lease_s: float = 60.0,
        poll_interval_s: float = 0.5,
    ) -> None:
        self.db = db
        self.bus = bus
        self.providers = providers
        self.unconfigured = unconfigured
        self.worker_id = worker_id
        self.policy = policy
        self.metrics = metrics
        self.batch_size = batch_size
        self.concurrency = max(1, concurrency)
        self.lease_s = lease_s
        self.poll_interval_s = poll_interval_s
        self._stopping = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._reserved = 0  # slots of the claims in flight
        self._room = asyncio.Event()
        self._finished: list[tuple[Job, SendResult]] = []
        self._results_ready = asyncio.Event()
        self._alerted: dict[str, float] = {}
        self._claim_credit = float(CLAIM_BURST)
        self._credit_at = 0.0
        self._held_at = 0.0  # when to look for due held pushes next (see _claim)
        self._claiming_held = False

    def stop(self) -> None:
        """Stop claiming; sends in flight finish and are recorded, then :meth:`run` returns."""
        self._stopping.set()
        self._room.set()  # the claim loop may be waiting for a free slot

    @property
    def _min_claim(self) -> int:
        """Claim only when this many slots are free (fewer, larger claim transactions)."""
        return max(1, min(self.batch_size, self.concurrency) // 4)

    async def run(self) -> None:
        log.info("delivery worker started", extra={"worker_id": self.worker_id})
        recorder = asyncio.gather(*(self._record_loop() for _ in range(self.db.overlap)))
        try:
            await asyncio.gather(*(self._claim_loop() for _ in range(self.db.overlap)))
        finally:
            await self._drain(recorder)

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            room = self.concurrency - len(self._sending) - self._reserved
            if room < self._min_claim:
                self._room.clear()
                await self._room.wait()
                continue
            limit = min(room, self.batch_size)
            self._reserved += limit
            try:
                wait = await self._claim(limit)
            except Exception:
                log.exception("claiming deliveries failed; trying again in 1 s")
                await asyncio.sleep(1.0)
                continue
            finally:
                self._reserved -= limit
            if wait is not None:  # the queue is empty for now
                self._room.set()  # what this claim reserved and did not take is free again
                await self.bus.wait_for_work(wait)
                await self._gather_work()

    async def _gather_work(self) -> None:
        """Woken by new work: claim at once if there is credit, else wait for it. Every worker
        of every process is woken by each acceptance; under load this turns many tiny claim
        transactions (most finding nothing) into fewer, fuller ones, one per ``CLAIM_GAP_S``,
        for at most that delay. Credit (a token bucket) builds up while wake-ups are rarer than
        that, so sparse bursts (a few notifications within milliseconds, as the proactive
        pipeline accepts them) are claimed without waiting (docs/proactive.md has the gap's
        measurements)."""
        now = time.monotonic()
        credit = min(CLAIM_BURST, self._claim_credit + (now - self._credit_at) / CLAIM_GAP_S)
        self._credit_at = now
        if credit >= 1.0:
            self._claim_credit = credit - 1.0
            return
        self._claim_credit = 0.0
        if not self._stopping.is_set():
            await asyncio.sleep((1.0 - credit) * CLAIM_GAP_S)
            self._credit_at = time.monotonic()

    async def _drain(self, recorder: asyncio.Future[list[None]]) -> None:
        """Let the sends in flight finish and record them, then give back every claim left.

        Cancelled while waiting (the shutdown grace ran out), the remaining sends are abandoned:
        what finished is still recorded and the abandoned claims are released at once, so another
        worker sends them without waiting for the lease (the provider may then see them twice).
        """
        abandoned: list[asyncio.Task[None]] = []
        task = asyncio.current_task()
        try:
            # Already cancelled (stopped without a grace): abandon at once.
            if self._sending and not (task and task.cancelling()):
                await asyncio.wait(set(self._sending))
        finally:
            abandoned = [task for task in self._sending if not task.done()]
            for task in abandoned:
                task.cancel()
            if abandoned:
                await asyncio.wait(abandoned)
            self._stopping.set()
            self._results_ready.set()
            await recorder
            released = await queue.release(self.db, self.worker_id)
            log.info(
                "delivery worker stopped",
                extra={"released": released, "abandoned": len(abandoned)},
            )

    async def _claim(self, limit: int) -> float | None:
        """Claim up to ``limit`` jobs and start sending them. Held pushes are claimed apart, a
        device's whole group at once (:func:`queue.claim_held`), at most every HELD_CHECK_S
        while none are found, and with at most half of the claim's room, so that neither kind
        of work starves the other. Returns None if it took all it could, else how long to wait
        for new work: the poll interval, or less when a waiting delivery comes due sooner."""
        jobs: list[Job] = []
        now = time.time()
        held_full = False  # this claim found a full batch of held pushes: more may wait
        if now >= self._held_at and not self._claiming_held:  # one claim loop at a time
            pick = max(1, limit // 2)
            self._claiming_held = True
            try:
                jobs = await queue.claim_held(self.db, self.worker_id, pick, self.lease_s)
            finally:
                self._claiming_held = False
            held_full = len(jobs) >= pick
            self._held_at = now if held_full else now + HELD_CHECK_S
        wait = None
        if len(jobs) < limit:
            claimed = await queue.claim(self.db, self.worker_id, limit - len(jobs), self.lease_s)
            jobs += claimed.jobs
            if len(jobs) < limit and not held_full:
                wait = self._until(claimed.next_due)
        done, sends = held.plan(jobs, time.time())
        if done:  # expired: recorded without a send
            self._finished += done
            self._results_ready.set()
        for send in sends:
            task = asyncio.create_task(self._send_one(send))
            self._sending.add(task)
            task.add_done_callback(self._sent)
        return wait

    def _until(self, due: float | None) -> float:
        """How long an idle worker waits for new work when the next waiting delivery comes due
        at ``due``: the poll interval at most."""
        if due is None:
            return self.poll_interval_s
        self._held_at = min(self._held_at, due)  # it may be a held push: look for it then
        return min(self.poll_interval_s, max(0.0, due - time.time()))

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if self.concurrency - len(self._sending) >= self._min_claim:
            self._room.set()

    async def _send_one(self, send: Send) -> None:
        self._finished += send.results(await self._send(send.job))
        self._results_ready.set()

    async def _send(self, job: Job) -> SendResult:
        if job.target is None:
            return SendResult(Outcome.FAILED, "the device was removed before delivery")
        provider = self.providers.get(job.provider)
        if provider is None:
            reason = self.unconfigured.get(job.provider, f"no provider named {job.provider!r}")
            return SendResult(Outcome.FAILED, f"provider {job.provider} is off: {reason}")
        try:
            return await provider.send(job.message, job.target)
        except Exception as exc:  # a provider bug must not stop the queue
            log.exception("provider raised", extra={"provider": job.provider})
            return SendResult(Outcome.RETRY, f"{type(exc).__name__}: {exc}")

    async def _record_loop(self) -> None:
        """One of :attr:`~nudge.store.db.Database.overlap` writers of results, each writing
        what finished while it waited (at most RECORD_BATCH per transaction), so results gather
        while every write is in flight. A write is awaited here, not started as a task of its
        own: that cost a turn of the event loop before each write, about a millisecond in a busy
        ``nudge serve``, added to every delivery's time to be recorded."""
        while True:
            await self._results_ready.wait()
            self._results_ready.clear()
            while self._finished:
                batch = self._finished[:RECORD_BATCH]
                del self._finished[:RECORD_BATCH]
                await self._record(batch)
            if self._stopping.is_set() and not self._sending and not self._finished:
                return

    async def _record(self, results: list[tuple[Job, SendResult]]) -> None:
        for attempt in range(3):
            try:
                states = await queue.record(self.db, self.worker_id, results, self.policy)
                break
            except Exception:
                log.exception(
                    "recording delivery results failed",
                    extra={"results": len(results), "attempt": attempt + 1},
                )
                await asyncio.sleep(0.5 * (attempt + 1))
        else:
            # Their claims run out after the lease and they are sent again (at least once).
            return
        for job, result in results:
            self.metrics.deliveries.labels(job.provider, result.outcome.value).inc()
            if result.outcome is Outcome.PROVIDER_ALERT:
                self._alert(job.provider, result.reason)
            elif states.get(job.delivery_id) == "failed":
                log.warning(
                    "delivery failed",
                    extra={
                        "delivery_id": job.delivery_id,
                        "provider": job.provider,
                        "reason": result.reason,
                    },
                )

    def _alert(self, provider: str, reason: str) -> None:
        now = time.monotonic()
        if now - self._alerted.get(provider, -ALERT_LOG_INTERVAL_S) < ALERT_LOG_INTERVAL_S:
            return
        self._alerted[provider] = now
        log.error(
            "provider alert: deliveries are kept and retried; fix the provider's credentials",
            extra={"provider": provider, "reason": reason},
        )
