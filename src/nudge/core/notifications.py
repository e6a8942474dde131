"""Accepting notifications (durably, with their deliveries) and reading them back.

``accept_notification`` is the one write path for direct and proactive notifications: in one
transaction it checks the user and install, answers repeats (idempotency key, 60 s duplicate
window), applies the hourly limit for direct sends, and writes the notification, one delivery per
target (the inbox and each device) and the app chat line.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from nudge.core.errors import Invalid, NotFound, RateLimited
from nudge.ids import new_id
from nudge.store.models import App, ChatMessage, Delivery, Device, Install, Notification, User

HOUR = 3600.0


@dataclass(frozen=True)
class NotificationRequest:
    app_id: str
    uid: str
    message: str
    kind: str = "direct"  # direct | proactive
    type: str = ""
    data: dict[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None


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
    if "\x00" in message:
        raise Invalid(f"{field_name}: must not contain NUL characters")
    if len(message) > max_chars:
        raise Invalid(f"{field_name}: {len(message)} characters is over the limit of {max_chars}")
    return message


async def _existing(conn: AsyncConnection, notification_id: str) -> tuple[str, int]:
    devices = await conn.scalar(
        select(func.count())
        .select_from(Delivery)
        .where(Delivery.notification_id == notification_id, Delivery.provider != "inbox")
    )
    return notification_id, int(devices or 0)


async def direct_rate_limit(
    conn: AsyncConnection, app_id: str, uid: str, limit: int, now: float
) -> tuple[RateLimit, bool]:
    """The sliding one-hour window of direct sends; returns (state, allowed)."""
    rows = (
        await conn.execute(
            select(Notification.created_at)
            .where(
                Notification.app_id == app_id,
                Notification.uid == uid,
                Notification.kind == "direct",
                Notification.created_at > now - HOUR,
            )
            .order_by(Notification.created_at)
            .limit(limit)
        )
    ).all()
    used = len(rows)
    if used >= limit:
        reset = max(1, math.ceil(rows[0].created_at + HOUR - now))
        return RateLimit(limit=limit, remaining=0, reset=reset), False
    # After this send the window is non-empty: it frees up when its oldest entry turns one hour.
    reset = math.ceil(rows[0].created_at + HOUR - now) if rows else int(HOUR)
    return RateLimit(limit=limit, remaining=limit - used - 1, reset=max(reset, 0)), True


async def accept_notification(
    conn: AsyncConnection,
    request: NotificationRequest,
    *,
    default_limit_per_hour: int,
    dedupe_window_s: float,
    lock_rows: bool = False,
) -> Accepted:
    """Validate and durably queue one notification. Raises before writing anything."""
    now = time.time()
    app = (
        await conn.execute(
            select(App.name, App.direct_limit_per_hour).where(App.id == request.app_id)
        )
    ).first()
    if app is None:
        raise NotFound(f"app {request.app_id!r} not found")
    limit = app.direct_limit_per_hour or default_limit_per_hour
    if (await conn.execute(select(User.uid).where(User.uid == request.uid))).first() is None:
        raise NotFound(f"user {request.uid!r} not found: check the uid")
    install_q = select(Install.uid).where(
        Install.uid == request.uid, Install.app_id == request.app_id
    )
    if lock_rows:  # PostgreSQL: serialise sends to one (user, app) so the hourly count holds
        install_q = install_q.with_for_update()
    if (await conn.execute(install_q)).first() is None:
        raise NotFound(f"user {request.uid!r} has not installed app {request.app_id!r}")

    if request.idempotency_key is not None:
        first = await conn.scalar(
            select(Notification.id).where(
                Notification.app_id == request.app_id,
                Notification.idempotency_key == request.idempotency_key,
            )
        )
        if first is not None:
            nid, devices = await _existing(conn, first)
            return Accepted(nid, devices, duplicate=True, rate_limit=None)

    digest = dedupe_hash(request.app_id, request.uid, request.type, request.message)
    recent = await conn.scalar(
        select(Notification.id)
        .where(
            Notification.app_id == request.app_id,
            Notification.uid == request.uid,
            Notification.dedupe_hash == digest,
            Notification.created_at > now - dedupe_window_s,
        )
        .limit(1)
    )
    if recent is not None:
        nid, devices = await _existing(conn, recent)
        return Accepted(nid, devices, duplicate=True, rate_limit=None)

    rate: RateLimit | None = None
    if request.kind == "direct":
        rate, allowed = await direct_rate_limit(conn, request.app_id, request.uid, limit, now)
        if not allowed:
            raise RateLimited(
                f"rate limited: at most {limit} notifications per user per hour for this app; "
                f"retry in {rate.reset} s",
                retry_after=rate.reset,
                headers=rate.headers(),
            )

    notification_id = new_id("n")
    data = {
        **request.data,
        "app_id": request.app_id,
        "notification_id": notification_id,
        "type": request.type or request.kind,
        "navigate_to": f"/chat/{request.app_id}",
    }
    await conn.execute(
        insert(Notification).values(
            id=notification_id,
            app_id=request.app_id,
            uid=request.uid,
            kind=request.kind,
            type=request.type,
            title=f"{app.name} says",
            body=request.message,
            data=data,
            dedupe_hash=digest,
            collapse_key=digest[:32],
            idempotency_key=request.idempotency_key,
            created_at=now,
            read_at=None,
        )
    )
    devices = (
        await conn.execute(select(Device.id, Device.platform).where(Device.uid == request.uid))
    ).all()
    targets = [("inbox", None)] + [(d.platform, d.id) for d in devices]
    await conn.execute(
        insert(Delivery),
        [
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
            for provider, device_id in targets
        ],
    )
    await conn.execute(
        insert(ChatMessage).values(
            uid=request.uid,
            app_id=request.app_id,
            sender="app",
            text=request.message,
            notification_id=notification_id,
            created_at=now,
        )
    )
    return Accepted(notification_id, len(devices), duplicate=False, rate_limit=rate)


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
