"""The delivery queue, kept in the ``deliveries`` table.

A worker claims due rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite has one writer at a
time) by setting a lease; a row whose lease ran out (its worker died) is due again. Results are
recorded only by the worker that still holds the claim.

Each claim and each batch of results is one transaction run synchronously in one trip
(``Database.run_in_transaction``), with statements built once: per statement, aiosqlite's
round trips between the event loop and its thread, and building a statement, cost more than
SQLite's own work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ARRAY,
    Connection,
    String,
    and_,
    any_,
    bindparam,
    delete,
    or_,
    select,
    union_all,
    update,
)

from nudge.sdk.backoff import retry_delay
from nudge.delivery.providers.base import Outcome, PushMessage, SendResult, Target
from nudge.store.db import Database
from nudge.store.fast import Statement
from nudge.store.models import Delivery, Device, Notification

DUE_STATES = ("queued", "retrying")


@dataclass(frozen=True)
class Job:
    delivery_id: str
    provider: str
    attempts: int
    created_at: float
    message: PushMessage
    target: Target | None  # None: the device was removed after the notification was accepted


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float
    max_s: float
    max_age_s: float


# Parameters: t_now, t_lease (lease end), worker, pick (how many), ids (expanding).
_WAITING = and_(Delivery.state.in_(DUE_STATES), Delivery.next_attempt_at <= bindparam("t_now"))
_LAPSED = and_(Delivery.state == "sending", Delivery.lease_until < bindparam("t_now"))
_TAKE = update(Delivery).values(
    state="sending",
    lease_until=bindparam("t_lease"),
    claimed_by=bindparam("worker"),
    updated_at=bindparam("t_now"),
)
# PostgreSQL: a locking CTE runs once. As ``IN (subquery)`` PostgreSQL may plan a nested-loop
# semi join that runs the subquery again for every row, each run skipping what the previous
# ones locked, and claim every due row instead of ``pick``.
_PICKED = (
    select(Delivery.id)
    .where(or_(_WAITING, _LAPSED))
    .order_by(Delivery.next_attempt_at)
    .limit(bindparam("pick"))
    .with_for_update(skip_locked=True)
    .cte("picked")
)
_CLAIM_POSTGRES = Statement(_TAKE.where(Delivery.id == _PICKED.c.id).returning(Delivery.id))


def _first(condition: Any) -> Any:
    return (
        select(Delivery.id, Delivery.next_attempt_at)
        .where(condition)
        .order_by(Delivery.next_attempt_at)
        .limit(bindparam("pick"))
        .subquery()
    )


# SQLite: the first ``pick`` of each kind of due row, each found in ix_deliveries_due, then the
# first ``pick`` of both. With the two conditions OR-ed in one query SQLite collects and sorts
# every due row, or scans the whole table (delivered rows too) for each claim. No second check
# is needed in the UPDATE: BEGIN IMMEDIATE holds the write lock from the start.
_CANDIDATES = union_all(select(_first(_WAITING)), select(_first(_LAPSED))).subquery()
_PICK_SQLITE = (
    select(_CANDIDATES.c.id).order_by(_CANDIDATES.c.next_attempt_at).limit(bindparam("pick"))
)
_CLAIM_SQLITE = Statement(
    _TAKE.where(Delivery.id.in_(_PICK_SQLITE.scalar_subquery())).returning(Delivery.id)
)
_CLAIMED = Statement(
    select(
        Delivery.id,
        Delivery.provider,
        Delivery.device_id,
        Delivery.attempts,
        Delivery.created_at,
        Notification.id.label("notification_id"),
        Notification.app_id,
        Notification.uid,
        Notification.title,
        Notification.body,
        Notification.data,
        Notification.collapse_key,
        Notification.created_at.label("notification_created_at"),
        Device.platform,
        Device.token,
        Device.subscription,
    )
    .join(Notification, Notification.id == Delivery.notification_id)
    .outerjoin(Device, Device.id == Delivery.device_id)
    .where(Delivery.id.in_(bindparam("ids", expanding=True)))
)
_HELD = and_(Delivery.claimed_by == bindparam("worker"), Delivery.state == "sending")
_DONE = update(Delivery).values(
    state="delivered",
    attempts=Delivery.attempts + 1,
    lease_until=None,
    claimed_by=None,
    updated_at=bindparam("t_now"),
    delivered_at=bindparam("t_now"),
    last_error="",
)
_DELIVERED = Statement(
    _DONE.where(Delivery.id.in_(bindparam("ids", expanding=True)), _HELD).returning(Delivery.id)
)
# PostgreSQL: one array parameter, so one SQL text (prepared once per connection) for any number
# of ids; an expanding IN list is a new statement to prepare for every length.
_DELIVERED_POSTGRES = _DONE.where(
    Delivery.id == any_(bindparam("ids", type_=ARRAY(String))), _HELD
).returning(Delivery.id)


async def claim(db: Database, worker_id: str, limit: int, lease_s: float) -> list[Job]:
    """Claim up to ``limit`` due deliveries for ``worker_id`` and load what sending needs."""
    statement = _CLAIM_POSTGRES if db.is_postgres else _CLAIM_SQLITE

    def work(conn: Connection) -> list[Job]:
        now = time.time()
        params = {"t_now": now, "t_lease": now + lease_s, "worker": worker_id, "pick": limit}
        claimed = [r.id for r in statement.rows(conn, params)]
        if not claimed:
            return []
        return [_job(r) for r in _CLAIMED.rows(conn, {"ids": claimed})]

    # Short and bounded (one claim, one read of at most ``limit`` rows): on the event loop when
    # SQLite's write lock is free (see Database.run_in_transaction).
    return await db.run_in_transaction(work, on_loop=True)


def _job(r: Any) -> Job:
    message = PushMessage(
        notification_id=r.notification_id,
        app_id=r.app_id,
        uid=r.uid,
        title=r.title,
        body=r.body,
        data=r.data,
        collapse_key=r.collapse_key,
        created_at=r.notification_created_at,
    )
    if r.provider == "inbox":
        target: Target | None = Target(platform="inbox")
    elif r.token is None:
        target = None
    else:
        target = Target(r.platform, r.device_id, r.token, r.subscription)
    return Job(r.id, r.provider, r.attempts, r.created_at, message, target)


async def record(
    db: Database,
    worker_id: str,
    results: list[tuple[Job, SendResult]],
    policy: RetryPolicy,
) -> dict[str, str]:
    """Write the outcome of each sent job; returns delivery id -> state.

    Deliveries are the common case and share one UPDATE; the others are written one by one.
    A row is written only while this worker still holds its claim. Until a result is written,
    a worker that dies makes it be sent again, so writing soon matters (docs/delivery.md,
    "kill -9"): on PostgreSQL the deliveries are one statement on its own (autocommit), a
    single round trip, where a transaction around it took up to four (BEGIN, prepare for that
    length of IN list, UPDATE, COMMIT), each waiting its turn on a busy worker's event loop.
    The other outcomes are one transaction.
    """
    delivered = [job.delivery_id for job, r in results if r.outcome is Outcome.DELIVERED]
    states: dict[str, str] = {}
    if db.is_postgres and delivered:
        async with db.engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            params = {"ids": delivered, "worker": worker_id, "t_now": time.time()}
            done = await auto.execute(_DELIVERED_POSTGRES, params)
            states.update(dict.fromkeys((r.id for r in done), "delivered"))
        delivered = []
    rest = [(job, r) for job, r in results if r.outcome is not Outcome.DELIVERED]
    if not rest and not delivered:
        return states

    def work(conn: Connection) -> dict[str, str]:
        now = time.time()
        for start in range(0, len(delivered), 500):
            params = {"ids": delivered[start : start + 500], "worker": worker_id, "t_now": now}
            done = _DELIVERED.rows(conn, params)
            states.update(dict.fromkeys((r.id for r in done), "delivered"))
        for job, result in rest:
            values = _values_for(job, result, policy, now)
            held = conn.execute(
                update(Delivery).where(Delivery.id == job.delivery_id, _HELD).values(**values),
                {"worker": worker_id},
            )
            if held.rowcount == 0:
                continue  # our lease expired and another worker took it over
            states[job.delivery_id] = values["state"]
            if result.outcome is Outcome.TOKEN_INVALID and job.target and job.target.device_id:
                _remove_device(conn, job.target.device_id)
        return states

    return await db.run_in_transaction(work, on_loop=True)  # bounded by RECORD_BATCH results


def _values_for(job: Job, result: SendResult, policy: RetryPolicy, now: float) -> dict[str, Any]:
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


def _remove_device(conn: Connection, device_id: str) -> None:
    """A dead token: delete the device and close its other pending deliveries."""
    conn.execute(delete(Device).where(Device.id == device_id))
    conn.execute(
        update(Delivery)
        .where(Delivery.device_id == device_id, Delivery.state.in_(DUE_STATES))
        .values(
            state="token-removed",
            last_error="device token is no longer valid",
            updated_at=time.time(),
        )
    )


async def release(db: Database, worker_id: str) -> int:
    """Give back every claim of ``worker_id`` (graceful shutdown); returns how many."""
    async with db.begin() as conn:
        result = await conn.execute(
            update(Delivery)
            .where(Delivery.claimed_by == worker_id, Delivery.state == "sending")
            .values(state="queued", lease_until=None, claimed_by=None, updated_at=time.time())
        )
    return int(result.rowcount or 0)
