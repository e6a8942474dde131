"""The delivery queue, kept in the ``deliveries`` table: claims, results and releases.

A worker claims due rows by setting a lease; a row whose lease ran out (its worker died) is due
again. Results are recorded only by the worker that still holds the claim. The SQL is in
:mod:`nudge.store.notifications`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import Connection

from nudge.delivery.providers.base import Outcome, PushMessage, SendResult, Target
from nudge.sdk.backoff import retry_delay
from nudge.store import notifications as store
from nudge.store.db import Database
from nudge.store.inbox import unread_counts


@dataclass(frozen=True)
class Job:
    delivery_id: str
    provider: str
    attempts: int
    created_at: float  # when the delivery came due (accepted, or scheduled): its max age starts
    message: PushMessage
    target: Target | None  # None: the device was removed after the notification was accepted
    hold: str = ""  # the notification's hold: "quiet" and "digest" pushes are sent summarised


@dataclass(frozen=True)
class DeliveryRetry:
    """Retry timing of a delivery (not the SDK's RetryPolicy): backoff, its cap, when to fail."""

    base_s: float
    max_s: float
    max_age_s: float


@dataclass(frozen=True)
class Claimed:
    """The jobs of one claim and, when it took fewer than it asked for, when the next waiting
    delivery comes due (None: none waits), read in the same trip: an idle worker sleeps until
    then, since nothing announces a held push's window ending or a scheduled send's time."""

    jobs: list[Job]
    next_due: float | None = None


async def claim(db: Database, worker_id: str, limit: int, lease_s: float) -> Claimed:
    """Claim up to ``limit`` due deliveries for ``worker_id`` and load what sending needs: on
    PostgreSQL one autocommit statement (:func:`nudge.store.notifications.claim_now`), on SQLite
    one transaction with the next-due probe (through the read engine it cost a trip to
    aiosqlite's thread per short claim, whose hold on the GIL delayed the event loop). APNs jobs
    carry their user's unread count (the badge): one more query per claim that has any."""
    if db.is_sqlite:
        rows, badges, due = await db.write_now(partial(_claim, worker_id, limit, lease_s))
        return Claimed([_job(r, badges) for r in rows], due)
    rows = await store.claim_now(db, worker_id, limit, time.time(), lease_s)
    uids = _badged(rows)
    badges = await db.query(lambda conn: unread_counts(conn, uids)) if uids else {}
    due = await db.query(store.next_due) if len(rows) < limit else None
    return Claimed([_job(r, badges) for r in rows], due)


async def claim_held(db: Database, worker_id: str, limit: int, lease_s: float) -> list[Job]:
    """Claim whole groups of due held pushes, every one of a device together
    (:func:`nudge.store.notifications.claim_held`): the devices of up to ``limit`` of them."""
    rows, badges = await db.write_now(partial(_take, store.claim_held, worker_id, limit, lease_s))
    return [_job(r, badges) for r in rows]


def _claim(
    worker_id: str, limit: int, lease_s: float, conn: Connection
) -> tuple[list[Any], dict[str, int], float | None]:
    rows, badges = _take(store.claim, worker_id, limit, lease_s, conn)
    return rows, badges, store.next_due(conn) if len(rows) < limit else None


def _take(
    take: Callable[[Connection, str, int, float, float], list[Any]],
    worker_id: str,
    limit: int,
    lease_s: float,
    conn: Connection,
) -> tuple[list[Any], dict[str, int]]:
    rows = take(conn, worker_id, limit, time.time(), lease_s)
    uids = _badged(rows)
    return rows, unread_counts(conn, uids) if uids else {}


def _badged(rows: list[Any]) -> set[str]:
    """The users of the claimed APNs deliveries."""
    return {r.uid for r in rows if r.provider == "apns"}


def _job(r: Any, badges: dict[str, int]) -> Job:
    message = PushMessage(
        notification_id=r.notification_id,
        app_id=r.app_id,
        uid=r.uid,
        title=r.title,
        body=r.body,
        data=r.data,
        collapse_key=r.collapse_key,
        created_at=r.notification_created_at,
        priority=r.priority,
        expires_at=r.expires_at,
        send_at=r.send_at,
        badge=badges.get(r.uid, 0) if r.provider == "apns" else None,
    )
    if r.provider == "inbox":
        target: Target | None = Target(platform="inbox")
    elif r.token is None:
        target = None
    else:
        target = Target(r.platform, r.device_id, r.token, r.subscription)
    due = max(r.created_at, r.send_at or 0.0)
    return Job(r.id, r.provider, r.attempts, due, message, target, r.hold)


async def record(
    db: Database, worker_id: str, results: list[tuple[Job, SendResult]], policy: DeliveryRetry
) -> dict[str, str]:
    """Write the outcome of each sent job; returns delivery id -> state.

    Deliveries are the common case and share one UPDATE; the others are written one by one,
    each only while this worker still holds its claim. Until a result is written, a worker that
    dies makes it be sent again, so writing soon matters: on PostgreSQL the deliveries are one
    autocommit statement (:func:`nudge.store.notifications.record_delivered_now`).
    """
    delivered = [job.delivery_id for job, r in results if r.outcome is Outcome.DELIVERED]
    states: dict[str, str] = {}
    if db.is_postgres and delivered:
        done = await store.record_delivered_now(db, worker_id, delivered, time.time())
        states.update(dict.fromkeys(done, "delivered"))
        delivered = []
    rest = [(job, r) for job, r in results if r.outcome is not Outcome.DELIVERED]
    if not rest and not delivered:
        return states
    return await db.write_now(partial(_record, worker_id, delivered, rest, policy, states))


def _record(
    worker_id: str,
    delivered: list[str],
    rest: list[tuple[Job, SendResult]],
    policy: DeliveryRetry,
    states: dict[str, str],
    conn: Connection,
) -> dict[str, str]:
    now = time.time()
    states.update(
        dict.fromkeys(store.record_delivered(conn, worker_id, delivered, now), "delivered")
    )
    merged: dict[str, list[str]] = {}  # the reason (it names the summary's delivery) -> ids
    for job, result in rest:
        if result.outcome is Outcome.MERGED:
            merged.setdefault(result.reason, []).append(job.delivery_id)
            continue
        values = _values_for(job, result, policy, now)
        if not store.record_result(conn, worker_id, job.delivery_id, values):
            continue  # our lease expired and another worker took it over
        states[job.delivery_id] = values["state"]
        if result.outcome is Outcome.TOKEN_INVALID and job.target and job.target.device_id:
            store.remove_device(conn, job.target.device_id, now)
    for reason, ids in merged.items():
        states.update(
            dict.fromkeys(store.record_merged(conn, worker_id, ids, reason, now), "merged")
        )
    return states


def _values_for(job: Job, result: SendResult, policy: DeliveryRetry, now: float) -> dict[str, Any]:
    """The row update for an outcome other than delivered."""
    attempts = job.attempts + 1
    base: dict[str, Any] = {
        "attempts": attempts,
        "lease_until": None,
        "claimed_by": None,
        "updated_at": now,
        "last_error": result.reason,
    }
    if result.outcome is Outcome.TOKEN_INVALID:
        return base | {"state": "token-removed"}
    if result.outcome is Outcome.FAILED:
        return base | {"state": "failed"}
    if result.outcome is Outcome.EXPIRED:
        return base | {"attempts": job.attempts, "state": "expired"}  # never sent
    # RETRY and PROVIDER_ALERT: try again later, until the message is too old.
    delay = retry_delay(
        attempts, base_s=policy.base_s, max_s=policy.max_s, retry_after=result.retry_after
    )
    if now + delay > job.created_at + policy.max_age_s:
        reason = (
            f"gave up after {attempts} attempts over {int(now - job.created_at)} s: {result.reason}"
        )
        return base | {"state": "failed", "last_error": reason}
    return base | {"state": "retrying", "next_attempt_at": now + delay}


async def release(db: Database, worker_id: str) -> int:
    """Give back every claim of ``worker_id`` (graceful shutdown); returns how many."""
    return await db.write(lambda conn: store.release(conn, worker_id, time.time()))
