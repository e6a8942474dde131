"""Direct notifications from apps (DESIGN section 1): auth, checks, rate-limit headers, accept."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select

from nudge.core.apps import app_for_secret
from nudge.core.errors import Invalid, NotFound, NudgeError, Unauthorized
from nudge.core.notifications import (
    Accepted,
    NotificationRequest,
    RateLimit,
    accept_notification,
    direct_rate_limit,
    validate_message,
)
from nudge.platform import Platform
from nudge.store.models import App


@dataclass(frozen=True)
class DirectSend:
    authorization: str | None
    app_id: str | None  # None: the app is the one the secret identifies
    uid: str | None
    message: str | None
    type: str = ""
    data: dict[str, str] | None = None
    idempotency_key: str | None = None


def _check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not key or len(key) > 255 or not key.isprintable():
        raise Invalid("Idempotency-Key: must be 1-255 printable characters")
    return key


async def send_direct(platform: Platform, send: DirectSend) -> tuple[Accepted, RateLimit]:
    """Accept one direct notification. Raises a ``NudgeError`` whose headers carry the limits."""
    settings = platform.settings
    async with platform.db.read() as conn:
        owner = await app_for_secret(conn, send.authorization)
    if send.app_id is not None and owner != send.app_id:
        raise Unauthorized(f"this app secret belongs to another app, not {send.app_id!r}")
    app_id = owner
    if send.uid is None or not send.uid.strip():
        raise Invalid("uid: required and must not be empty")
    message = validate_message(send.message, settings.message_max_chars)
    request = NotificationRequest(
        app_id=app_id,
        uid=send.uid,
        message=message,
        kind="direct",
        type=send.type,
        data=send.data or {},
        idempotency_key=_check_idempotency_key(send.idempotency_key),
    )
    accepted = await platform.writer.run(
        lambda conn: accept_notification(
            conn,
            request,
            default_limit_per_hour=settings.direct_limit_per_hour,
            dedupe_window_s=settings.dedupe_window_s,
            lock_rows=platform.db.is_postgres,
        )
    )
    platform.metrics.accepted.labels("direct").inc()
    await platform.bus.wake_workers()
    rate = accepted.rate_limit or await current_rate_limit(platform, app_id, send.uid)
    return accepted, rate


async def current_rate_limit(platform: Platform, app_id: str | None, uid: str | None) -> RateLimit:
    """The limit state to report on any answer (for unknown apps or users: the empty window)."""
    default = platform.settings.direct_limit_per_hour
    if not app_id:
        return RateLimit(default, default, 0)
    async with platform.db.read() as conn:
        per_app = await conn.scalar(select(App.direct_limit_per_hour).where(App.id == app_id))
        limit = per_app or default
        if not uid:
            return RateLimit(limit, limit, 0)
        state, allowed = await direct_rate_limit(conn, app_id, uid, limit, time.time())
    # direct_rate_limit reports the state after one more send; report the current one.
    if not allowed:
        return state
    remaining = state.remaining + 1
    return RateLimit(limit, remaining, 0 if remaining == limit else state.reset)


async def with_rate_headers(
    platform: Platform, exc: NudgeError, app_id: str | None, uid: str | None
) -> NudgeError:
    """Attach ``X-RateLimit-*`` to an error answer (every answer carries them)."""
    if "X-RateLimit-Limit" not in exc.headers:
        try:
            rate = await current_rate_limit(platform, app_id, uid)
        except Exception:  # never let the headers turn a 4xx into a 500
            rate = RateLimit(platform.settings.direct_limit_per_hour, 0, 0)
        exc.headers.update(rate.headers())
    return exc


__all__ = ["DirectSend", "NotFound", "send_direct", "with_rate_headers", "current_rate_limit"]
