"""The delivery queue's claims, on SQLite and on PostgreSQL: what is due, in which order, and
what happens to a claim whose lease ran out."""

from __future__ import annotations

import time

from nudge.core.notifications import accept_batch
from nudge.delivery import queue
from nudge.delivery.providers.base import Outcome, SendResult
from nudge.store.db import Database
from tests.store.test_store import LIMITS, req, seed

POLICY = queue.DeliveryRetry(base_s=1.0, max_s=600.0, max_age_s=3600.0)


async def accept(db: Database, app_id: str, *messages: str) -> None:
    """One batch: each message is two due deliveries (the user's device and inbox)."""
    batch = [req(app_id, message=m, kind="proactive") for m in messages]
    await db.write(lambda conn: accept_batch(conn, batch, LIMITS))


def ids(jobs: list[queue.Job]) -> set[str]:
    return {job.delivery_id for job in jobs}


async def test_a_claim_whose_lease_ran_out_is_taken_over_and_its_old_holder_cannot_record(
    db: Database,
) -> None:
    app_id, _ = await seed(db)
    await accept(db, app_id, "a", "b", "c")
    lapsed = (await queue.claim(db, "w1", 10, lease_s=-1.0)).jobs  # its lease is already over
    assert len(lapsed) == 6
    taken = (await queue.claim(db, "w2", 10, lease_s=30.0)).jobs
    assert ids(taken) == ids(lapsed)
    assert (await queue.claim(db, "w3", 10, lease_s=30.0)).jobs == []  # w2's lease still runs
    delivered = SendResult(Outcome.DELIVERED)
    assert await queue.record(db, "w1", [(j, delivered) for j in lapsed], POLICY) == {}
    states = await queue.record(db, "w2", [(j, delivered) for j in taken], POLICY)
    assert states == dict.fromkeys(ids(taken), "delivered")


async def test_claims_take_the_longest_waiting_first_and_leave_what_is_not_due(
    db: Database,
) -> None:
    app_id, _ = await seed(db)
    await accept(db, app_id, "old")
    await accept(db, app_id, "new one", "newer one")
    old = (await queue.claim(db, "w1", 2, lease_s=-1.0)).jobs  # the first batch's two, lapsed
    assert {job.message.body for job in old} == {"old"}
    later = (await queue.claim(db, "w2", 3, lease_s=30.0)).jobs
    assert ids(old) < ids(later)  # lapsed claims came first: they were due before the rest
    postponed = [(j, SendResult(Outcome.RETRY, "busy", retry_after=60.0)) for j in later]
    assert set((await queue.record(db, "w2", postponed, POLICY)).values()) == {"retrying"}
    rest = (await queue.claim(db, "w3", 10, lease_s=30.0)).jobs
    assert len(rest) == 3 and not ids(rest) & ids(later)  # the retries wait their 60 s


async def test_a_claim_that_comes_up_short_says_when_the_next_waiting_delivery_is_due(
    db: Database,
) -> None:
    """An idle worker sleeps until then: read in the claim's own trip, only when it is short."""
    app_id, _ = await seed(db)
    assert (await queue.claim(db, "w1", 10, lease_s=30.0)).next_due is None  # nothing waits
    await accept(db, app_id, "a", "b")
    first = await queue.claim(db, "w1", 2, lease_s=30.0)
    assert len(first.jobs) == 2 and first.next_due is None  # full: more may be due, not read
    second = await queue.claim(db, "w1", 2, lease_s=30.0)
    busy = SendResult(Outcome.RETRY, "busy", retry_after=60.0)
    await queue.record(db, "w1", [(j, busy) for j in second.jobs], POLICY)

    short = await queue.claim(db, "w2", 10, lease_s=30.0)

    assert short.jobs == []
    assert short.next_due is not None and 50 < short.next_due - time.time() <= 60  # the retries
