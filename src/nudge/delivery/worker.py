"""The delivery worker: claim due deliveries, send them through their providers, record results."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from nudge.delivery import queue
from nudge.delivery.events import EventBus
from nudge.delivery.providers.base import Outcome, Provider, SendResult
from nudge.delivery.queue import Job, RetryPolicy
from nudge.metrics import Metrics
from nudge.store.db import Database

log = logging.getLogger("nudge.delivery")


class DeliveryWorker:
    def __init__(
        self,
        db: Database,
        bus: EventBus,
        providers: Mapping[str, Provider],
        unconfigured: Mapping[str, str],
        *,
        worker_id: str,
        policy: RetryPolicy,
        metrics: Metrics,
        batch_size: int = 200,
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
        self.lease_s = lease_s
        self.poll_interval_s = poll_interval_s
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        log.info("delivery worker started", extra={"worker_id": self.worker_id})
        while not self._stopping.is_set():
            try:
                sent = await self.run_once()
            except Exception:
                log.exception("delivery loop error; retrying in 1 s")
                await asyncio.sleep(1.0)
                continue
            if sent == 0:
                await self.bus.wait_for_work(self.poll_interval_s)
        released = await queue.release(self.db, self.worker_id)
        log.info("delivery worker stopped", extra={"released": released})

    def stop(self) -> None:
        """Finish the batch in flight, then return from :meth:`run` (claims given back)."""
        self._stopping.set()

    async def run_once(self) -> int:
        """Claim one batch, send it, record it; returns how many were sent."""
        jobs = await queue.claim(self.db, self.worker_id, self.batch_size, self.lease_s)
        if not jobs:
            return 0
        results = await asyncio.gather(*(self._send(job) for job in jobs))
        states = await queue.record(self.db, self.worker_id, list(zip(jobs, results)), self.policy)
        for job, result in zip(jobs, results):
            self.metrics.deliveries.labels(job.provider, result.outcome.value).inc()
            if result.outcome is Outcome.PROVIDER_ALERT:
                log.error(
                    "provider alert: check its credentials and settings",
                    extra={"provider": job.provider, "reason": result.reason},
                )
            elif states.get(job.delivery_id) == "failed":
                log.warning(
                    "delivery failed",
                    extra={
                        "delivery_id": job.delivery_id,
                        "provider": job.provider,
                        "reason": result.reason,
                    },
                )
        return len(jobs)

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
