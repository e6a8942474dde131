"""Accepting notifications (durably, with their deliveries) and reading them back.

``accept_batch`` is the one write path for direct, proactive and admin notifications. For a whole
batch of requests it runs a fixed handful of queries (keys, users, installs, repeats, hourly
windows, devices) and three multi-row inserts, inside the caller's transaction. Each request is
then checked in order, in the order Omi answers: secret (401), user and install (404), repeat
(idempotency key or the same message within the duplicate window: the first result again), hourly
limit (429). A refused request writes nothing; an accepted one writes the notification, one
delivery per target (the inbox and each device) and the app chat line.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Connection, Dialect, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from nudge.errors import Invalid, NotFound, NudgeError, RateLimited, Unauthorized
from nudge.ids import id_floor, id_time, new_id
from nudge.store.fast import Statement
from nudge.store.models import (
    App,
    AppKey,
    Base,
    ChatMessage,
    Delivery,
    Device,
    Install,
    Notification,
    User,
)
from nudge.text import check_text

HOUR = 3600.0


@dataclass(frozen=True)
class NotificationRequest:
    app_id: str
    uid: str
    message: str
    kind: str = "direct"  # direct | proactive | message (a webhook's {"message"} answer)
    type: str = ""
    data: dict[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    # The SHA-256 of the caller's app secret, checked against app_id; None for trusted callers
    # (the proactive pipeline, admin commands).
    key_hash: str | None = None
    # A refusal found before the batch (bad fields); answered after the secret is checked.
    invalid: NudgeError | None = None


@dataclass(frozen=True)
class RateLimit:
    limit: int
    remaining: int
    reset: int  # seconds until a slot frees up

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


@dataclass(frozen=True)
class Accepted:
    notification_id: str
    devices: int
    duplicate: bool
    rate_limit: RateLimit | None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": "ok",
            "notification_id": self.notification_id,
            "devices": self.devices,
        }
        if self.duplicate:
            out["duplicate"] = True
        return out


def dedupe_hash(app_id: str, uid: str, type_: str, message: str) -> str:
    return hashlib.sha256(f"{app_id}\x1f{uid}\x1f{type_}\x1f{message}".encode()).hexdigest()


def validate_message(message: str | None, max_chars: int, field_name: str = "message") -> str:
    if message is None:
        raise Invalid(f"{field_name}: required")
    if not message.strip():
        raise Invalid(f"{field_name}: must not be empty")
    check_text(message, field_name)
    if len(message) > max_chars:
        raise Invalid(f"{field_name}: {len(message)} characters is over the limit of {max_chars}")
    return message


@dataclass(frozen=True)
class Limits:
    default_per_hour: int
    dedupe_window_s: float
    # Webhooks' {"message"} answers, per user per app per hour (0: no cap). Omi counts them
    # against nothing; the direct cap is the REST endpoint's alone.
    message_per_hour: int = 0


async def current_rate_limit(
    conn: AsyncConnection, app_id: str | None, uid: str | None, default_per_hour: int
) -> RateLimit:
    """The hourly window as it stands (for the headers of a refused request)."""
    per_app = None
    if app_id:
        per_app = await conn.scalar(select(App.direct_limit_per_hour).where(App.id == app_id))
    limit = per_app or default_per_hour
    if not app_id or not uid:
        return RateLimit(limit, limit, 0)
    now = time.time()
    rows = await conn.execute(
        _WINDOWS["direct"].statement, {"uids": [uid], "since": id_floor("n", now - HOUR)}
    )
    for row_app, _, used, oldest in cast(Any, rows):
        if row_app == app_id:
            reset = max(0, math.ceil(id_time(oldest) + HOUR - now))
            return RateLimit(limit, max(0, limit - int(used)), reset)
    return RateLimit(limit, limit, 0)


@dataclass
class _PairState:
    """The hourly window of one (app, user) pair, as the batch consumes it."""

    used: int
    oldest: float | None


# The batch's queries, built once (IN lists are expanding parameters): building and caching a
# statement per batch is a measurable part of the hot path. Pairs are looked up as
# ``a IN (...) AND b IN (...)`` and the extra combinations dropped in Python: SQLite cannot search
# an index for a row-value ``(a, b) IN (...)`` list and scans the whole index instead (which grew
# with every notification kept).

# The apps, each with those of the batch's keys that are its own (one query where two would do:
# each statement costs more in SQLAlchemy than in SQLite). Keys of other apps are looked up only
# when a secret matched none.
_APPS = Statement(
    select(App.id, App.name, App.direct_limit_per_hour, AppKey.key_hash, AppKey.revoked_at)
    .outerjoin(
        AppKey,
        (AppKey.app_id == App.id) & AppKey.key_hash.in_(bindparam("hashes", expanding=True)),
    )
    .where(App.id.in_(bindparam("ids", expanding=True)))
)
_KEYS = Statement(
    select(AppKey.key_hash, AppKey.app_id, AppKey.revoked_at).where(
        AppKey.key_hash.in_(bindparam("hashes", expanding=True))
    )
)
_USERS = Statement(select(User.uid).where(User.uid.in_(bindparam("uids", expanding=True))))
# The installs, each with its user's devices: the targets of every accepted notification.
_TARGETS_QUERY = (
    select(Install.app_id, Install.uid, Device.id.label("device_id"), Device.platform)
    .outerjoin(Device, Device.uid == Install.uid)
    .where(
        Install.app_id.in_(bindparam("app_ids", expanding=True)),
        Install.uid.in_(bindparam("uids", expanding=True)),
    )
)
_TARGETS = Statement(_TARGETS_QUERY)
_TARGETS_LOCKED = Statement(_TARGETS_QUERY.with_for_update(of=Install))
_BY_IDEMPOTENCY_KEY = Statement(
    select(Notification.app_id, Notification.idempotency_key, Notification.id).where(
        Notification.app_id.in_(bindparam("app_ids", expanding=True)),
        Notification.idempotency_key.in_(bindparam("keys", expanding=True)),
    )
)
_RECENT = Statement(
    select(Notification.dedupe_hash, Notification.id).where(
        Notification.dedupe_hash.in_(bindparam("digests", expanding=True)),
        Notification.created_at > bindparam("since"),
    )
)


# The hourly window is counted on the inbox's index ``(uid, id, app_id, kind)`` alone: ids sort
# by time (``nudge.ids``), so "since" is a range on the id. Its app is picked in Python: given an
# ``app_id IN (...)`` term, SQLite (which has no statistics here) searches the app's idempotency
# index instead, reading every row of the app.
def _window_statement(kind: str) -> Statement:
    return Statement(
        select(Notification.app_id, Notification.uid, func.count(), func.min(Notification.id))
        .where(
            Notification.uid.in_(bindparam("uids", expanding=True)),
            Notification.id > bindparam("since"),
            Notification.kind == kind,
        )
        .group_by(Notification.app_id, Notification.uid)
    )


# The kinds with an hourly window, each counted on its own.
_WINDOWS = {"direct": _window_statement("direct"), "message": _window_statement("message")}


def _hourly_limit(request: NotificationRequest, app: Any, limits: Limits) -> int:
    """The request's hourly cap; 0: none."""
    if request.kind == "direct":
        return int(app.direct_limit_per_hour or limits.default_per_hour)
    return limits.message_per_hour if request.kind == "message" else 0


def accept_batch(
    conn: Connection,
    requests: Sequence[NotificationRequest],
    limits: Limits,
    *,
    lock_rows: bool = False,
) -> list[Accepted | NudgeError]:
    """Validate and queue a batch inside the caller's transaction; one result (or refusal) per
    request, in order. Synchronous: run it with ``Database.run_in_transaction`` (or
    ``AsyncConnection.run_sync``)."""
    now = time.time()
    app_ids = {r.app_id for r in requests}
    uids = {r.uid for r in requests}
    pairs = {(r.app_id, r.uid) for r in requests}

    hashes = {r.key_hash for r in requests if r.key_hash is not None}
    owners: dict[str, str | None] = {}  # key hash -> its app (None: revoked)
    apps: dict[str, Any] = {}
    for r in _APPS.rows(conn, {"ids": list(app_ids), "hashes": list(hashes)}):
        apps[r.id] = r
        if r.key_hash is not None:
            owners[r.key_hash] = r.id if r.revoked_at is None else None
    if hashes - owners.keys():
        for key in _KEYS.rows(conn, {"hashes": list(hashes - owners.keys())}):
            owners[key.key_hash] = key.app_id if key.revoked_at is None else None
    # On PostgreSQL the install rows are locked: sends to one (app, user) take turns, so the
    # hourly count below holds across processes.
    installed: set[tuple[str, str]] = set()
    devices: dict[str, dict[str, str]] = {}  # uid -> device id -> platform
    query = _TARGETS_LOCKED if lock_rows else _TARGETS
    for target in query.rows(conn, {"app_ids": list(app_ids), "uids": list(uids)}):
        installed.add((target.app_id, target.uid))
        if target.device_id is not None:
            devices.setdefault(target.uid, {})[target.device_id] = target.platform
    installed &= pairs
    # An install implies its user (a foreign key): users are looked up only to tell an unknown
    # user from a missing install.
    unknown = {uid for _, uid in pairs - installed}
    users = {r.uid for r in _USERS.rows(conn, {"uids": list(unknown)})} if unknown else set()

    keys = {(r.app_id, r.idempotency_key) for r in requests if r.idempotency_key is not None}
    by_key: dict[tuple[str, str], str] = {}
    if keys:
        rows = _BY_IDEMPOTENCY_KEY.rows(
            conn,
            {"app_ids": list({a for a, _ in keys}), "keys": list({k for _, k in keys})},
        )
        by_key = {(r.app_id, r.idempotency_key): r.id for r in rows}
    digests = [dedupe_hash(r.app_id, r.uid, r.type, r.message) for r in requests]
    recent = {
        r.dedupe_hash: r.id
        for r in _RECENT.rows(
            conn, {"digests": list(set(digests)), "since": now - limits.dedupe_window_s}
        )
    }
    windows: dict[tuple[str, str, str], _PairState] = {
        (r.kind, r.app_id, r.uid): _PairState(0, None)
        for r in requests
        if r.kind == "direct" or (r.kind == "message" and limits.message_per_hour > 0)
    }
    for kind in {k for k, _, _ in windows}:
        rows = _WINDOWS[kind].rows(
            conn,
            {
                "uids": list({u for k, _, u in windows if k == kind}),
                "since": id_floor("n", now - HOUR),
            },
        )
        for app_id, uid, used, oldest in rows:
            if (kind, app_id, uid) in windows:
                windows[(kind, app_id, uid)] = _PairState(int(used), id_time(oldest))
    duplicates_of: set[str] = set()

    results: list[Accepted | NudgeError] = []
    notification_rows: list[dict[str, Any]] = []
    delivery_rows: list[dict[str, Any]] = []
    chat_rows: list[dict[str, Any]] = []
    for request, digest in zip(requests, digests):
        try:
            if request.key_hash is not None:
                owner = owners.get(request.key_hash)
                if owner is None:
                    raise Unauthorized(
                        "unknown or revoked app secret: create a key with POST /v1/apps/{id}/keys"
                    )
                if owner != request.app_id:
                    raise Unauthorized(
                        f"this app secret belongs to another app, not {request.app_id!r}"
                    )
            if request.invalid is not None:
                raise request.invalid
            app = apps.get(request.app_id)
            if app is None:
                raise NotFound(f"app {request.app_id!r} not found")
            if (request.app_id, request.uid) not in installed:
                if request.uid not in users:
                    raise NotFound(f"user {request.uid!r} not found: check the uid")
                raise NotFound(f"user {request.uid!r} has not installed app {request.app_id!r}")
        except NudgeError as exc:
            results.append(exc)
            continue

        first = None
        if request.idempotency_key is not None:
            first = by_key.get((request.app_id, request.idempotency_key))
        first = first or recent.get(digest)
        if first is not None:
            duplicates_of.add(first)
            results.append(Accepted(first, -1, duplicate=True, rate_limit=None))
            continue

        rate: RateLimit | None = None
        window = windows.get((request.kind, request.app_id, request.uid))
        if window is not None:
            limit = _hourly_limit(request, app, limits)
            if window.used >= limit:
                reset = max(1, math.ceil((window.oldest or now) + HOUR - now))
                rate = RateLimit(limit=limit, remaining=0, reset=reset)
                what = "notifications" if request.kind == "direct" else "webhook message answers"
                results.append(
                    RateLimited(
                        f"rate limited: at most {limit} {what} per user per hour for this "
                        f"app; retry in {reset} s",
                        retry_after=reset,
                        headers=rate.headers(),
                    )
                )
                continue
            window.used += 1
            window.oldest = window.oldest or now
            rate = RateLimit(
                limit=limit,
                remaining=limit - window.used,
                reset=max(0, math.ceil(window.oldest + HOUR - now)),
            )

        notification_id = new_id("n")
        sends = [("inbox", None), *((p, d) for d, p in devices.get(request.uid, {}).items())]
        notification_rows.append(
            {
                "id": notification_id,
                "app_id": request.app_id,
                "uid": request.uid,
                "kind": request.kind,
                "type": request.type,
                "title": f"{app.name} says",
                "body": request.message,
                "data": json.dumps(
                    {
                        **request.data,
                        "app_id": request.app_id,
                        "notification_id": notification_id,
                        "type": request.type or request.kind,
                        "navigate_to": f"/chat/{request.app_id}",
                    }
                ),
                "dedupe_hash": digest,
                "collapse_key": digest[:32],
                "idempotency_key": request.idempotency_key,
                "created_at": now,
                "read_at": None,
            }
        )
        delivery_rows += [
            {
                "id": new_id("d"),
                "notification_id": notification_id,
                "provider": provider,
                "device_id": device_id,
                "state": "queued",
                "attempts": 0,
                "next_attempt_at": now,
                "lease_until": None,
                "claimed_by": None,
                "last_error": "",
                "created_at": now,
                "updated_at": now,
                "delivered_at": None,
            }
            for provider, device_id in sends
        ]
        chat_rows.append(
            {
                "uid": request.uid,
                "app_id": request.app_id,
                "sender": "app",
                "text": request.message,
                "notification_id": notification_id,
                "created_at": now,
            }
        )
        # Later requests of this batch see this one as a repeat.
        recent[digest] = notification_id
        if request.idempotency_key is not None:
            by_key[(request.app_id, request.idempotency_key)] = notification_id
        accepted = Accepted(notification_id, len(sends) - 1, duplicate=False, rate_limit=rate)
        results.append(accepted)

    if notification_rows:
        _insert_rows(conn, Notification, notification_rows)
        _insert_rows(conn, Delivery, delivery_rows)
        _insert_rows(conn, ChatMessage, chat_rows)
    if duplicates_of:
        counts = _device_counts(conn, duplicates_of)
        results = [
            replace(r, devices=counts.get(r.notification_id, 0))
            if isinstance(r, Accepted) and r.duplicate
            else r
            for r in results
        ]
    return results


def _insert_rows(conn: Connection, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """A multi-row insert with the rows passed to the driver as they are: SQLAlchemy's per-row
    parameter processing was a tenth of the CPU of a direct notification. JSON columns must
    already be serialized."""
    sql, columns = _insert_sql(conn.dialect, model, tuple(rows[0]))
    conn.exec_driver_sql(sql, [tuple(row[c] for c in columns) for row in rows])


@lru_cache(maxsize=32)
def _insert_sql(
    dialect: Dialect, model: type[Base], columns: tuple[str, ...]
) -> tuple[str, tuple[str, ...]]:
    compiled = insert(model).compile(dialect=dialect, column_keys=list(columns))
    return compiled.string, tuple(compiled.positiontup or columns)


def _device_counts(conn: Connection, notification_ids: set[str]) -> dict[str, int]:
    rows = conn.execute(
        select(Delivery.notification_id, func.count())
        .where(Delivery.notification_id.in_(notification_ids), Delivery.provider != "inbox")
        .group_by(Delivery.notification_id)
    )
    return {nid: int(n) for nid, n in rows}


async def accept_notification(
    conn: AsyncConnection,
    request: NotificationRequest,
    *,
    default_limit_per_hour: int,
    dedupe_window_s: float,
    lock_rows: bool = False,
) -> Accepted:
    """Accept one notification (a batch of one) in the caller's transaction; raises its refusal."""
    limits = Limits(default_limit_per_hour, dedupe_window_s)
    (result,) = await conn.run_sync(accept_batch, [request], limits, lock_rows=lock_rows)
    if isinstance(result, NudgeError):
        raise result
    return result


def _notification_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "app_id": row.app_id,
        "kind": row.kind,
        "type": row.type,
        "title": row.title,
        "body": row.body,
        "data": row.data,
        "created_at": row.created_at,
        "read": row.read_at is not None,
    }


async def list_notifications(
    conn: AsyncConnection, uid: str, *, limit: int = 50, cursor: str | None = None
) -> dict[str, Any]:
    """Newest first; ``cursor`` is the last id of the previous page."""
    q = select(Notification).where(Notification.uid == uid)
    if cursor:
        q = q.where(Notification.id < cursor)
    rows = (await conn.execute(q.order_by(Notification.id.desc()).limit(limit + 1))).all()
    items = [_notification_json(r) for r in rows[:limit]]
    next_cursor = items[-1]["id"] if len(rows) > limit else None
    return {"items": items, "next_cursor": next_cursor}


async def get_notification(conn: AsyncConnection, notification_id: str) -> dict[str, Any]:
    row = (
        await conn.execute(select(Notification).where(Notification.id == notification_id))
    ).first()
    if row is None:
        raise NotFound(f"notification {notification_id!r} not found")
    return _notification_json(row) | {"uid": row.uid}


async def notification_status(
    conn: AsyncConnection, app_id: str, notification_id: str
) -> dict[str, Any]:
    """The notification and each of its deliveries, for the app that sent it."""
    note = await get_notification(conn, notification_id)
    if note["app_id"] != app_id:
        raise NotFound(f"notification {notification_id!r} not found for app {app_id!r}")
    rows = (
        await conn.execute(
            select(Delivery)
            .where(Delivery.notification_id == notification_id)
            .order_by(Delivery.id)
        )
    ).all()
    note["deliveries"] = [
        {
            "id": r.id,
            "provider": r.provider,
            "device_id": r.device_id,
            "state": "retrying"
            if r.state == "sending" and r.attempts
            else ("queued" if r.state == "sending" else r.state),
            "attempts": r.attempts,
            "last_error": r.last_error,
            "next_attempt_at": r.next_attempt_at if r.state in ("queued", "retrying") else None,
            "delivered_at": r.delivered_at,
        }
        for r in rows
    ]
    return note


async def mark_read(conn: AsyncConnection, uid: str, notification_id: str) -> None:
    result = await conn.execute(
        update(Notification)
        .where(Notification.id == notification_id, Notification.uid == uid)
        .values(read_at=func.coalesce(Notification.read_at, time.time()))
    )
    if result.rowcount == 0:
        raise NotFound(f"notification {notification_id!r} not found for user {uid!r}")


async def chat_messages(
    conn: AsyncConnection, uid: str, app_id: str, *, limit: int = 50
) -> list[dict[str, Any]]:
    """The last ``limit`` messages between a user and an app, oldest first."""
    rows = (
        await conn.execute(
            select(ChatMessage)
            .where(ChatMessage.uid == uid, ChatMessage.app_id == app_id)
            .order_by(ChatMessage.id.desc())
            .limit(limit)
        )
    ).all()
    return [
        {
            "sender": r.sender,
            "text": r.text,
            "notification_id": r.notification_id,
            "created_at": r.created_at,
        }
        for r in reversed(rows)
    ]
