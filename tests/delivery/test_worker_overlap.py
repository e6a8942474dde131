"""The delivery worker keeps ``Database.overlap`` claims and writes of results in flight (one
each on SQLite), and never more sends than its concurrency."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import pytest

from nudge.bus.local import LocalEventBus
from nudge.delivery import queue
from nudge.delivery.providers.base import Outcome, PushMessage, SendResult, Target
from nudge.delivery.queue import Claimed, DeliveryRetry, Job
from nudge.delivery.worker import DeliveryWorker
from nudge.metrics import Metrics

TOTAL = 60


class Instant:
    name: ClassVar[str] = "inbox"

    async def send(self, message: PushMessage, target: Target) -> SendResult:
        await asyncio.sleep(0)
        return SendResult(Outcome.DELIVERED)

    async def aclose(self) -> None:
        pass


class Stub:
    """What the worker reads of its database: how many transactions may overlap."""

    def __init__(self, overlap: int) -> None:
        self.overlap = overlap


def job(n: int) -> Job:
    message = PushMessage(f"n{n}", "app", "u", "t", "b", {}, "", time.time())
    return Job(f"d{n}", "inbox", 0, time.time(), message, Target(platform="inbox"))


@pytest.mark.parametrize("overlap", [1, 2])
async def test_claims_and_writes_of_results_overlap_up_to_the_database_s_share(
    overlap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    due = [job(n) for n in range(TOTAL)]
    claims = writes = most_claims = most_writes = most_sending = 0
    recorded: list[str] = []
    worker: DeliveryWorker

    async def claim(db: Any, worker_id: str, limit: int, lease_s: float) -> Claimed:
        nonlocal claims, most_claims, most_sending
        claims += 1
        most_claims = max(most_claims, claims)
        most_sending = max(most_sending, len(worker._sending) + worker._reserved)
        await asyncio.sleep(0.01)  # the round trip and commit
        claims -= 1
        taken = due[:limit]
        del due[:limit]
        return Claimed(taken)

    async def record(
        db: Any, worker_id: str, results: list[tuple[Job, SendResult]], policy: Any
    ) -> dict[str, str]:
        nonlocal writes, most_writes
        writes += 1
        most_writes = max(most_writes, writes)
        await asyncio.sleep(0.05)  # slower than claims: results of later claims wait for it
        writes -= 1
        recorded.extend(j.delivery_id for j, _ in results)
        return {}

    async def release(db: Any, worker_id: str) -> int:
        return 0

    async def no_held(db: Any, worker_id: str, limit: int, lease_s: float) -> list[Job]:
        return []

    monkeypatch.setattr(queue, "claim", claim)
    monkeypatch.setattr(queue, "claim_held", no_held)
    monkeypatch.setattr(queue, "record", record)
    monkeypatch.setattr(queue, "release", release)
    worker = DeliveryWorker(
        Stub(overlap),  # type: ignore[arg-type]
        LocalEventBus(),
        {"inbox": Instant()},
        {},
        worker_id="w",
        policy=DeliveryRetry(1, 10, 60),
        metrics=Metrics(),
        batch_size=4,
        concurrency=8,
        poll_interval_s=0.01,
    )
    running = asyncio.create_task(worker.run())
    while len(recorded) < TOTAL:
        await asyncio.sleep(0.01)
    worker.stop()
    await running
    assert sorted(recorded) == sorted(j.delivery_id for j in map(job, range(TOTAL)))
    assert (most_claims, most_writes) == (overlap, overlap)
    assert most_sending <= 8
