"""Direct notifications from apps (contract.md §1): auth, checks, rate-limit headers, accept."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection

from nudge import auth
from nudge.bus.local import EventBus
from nudge.config import Settings
from nudge.core.acceptor import Acceptor
from nudge.core.notifications import (
    HOUR,
    Accepted,
    NotificationRequest,
    RateLimit,
    notification_status,
    validate_message,
)
from nudge.errors import Conflict, Invalid, NudgeError
from nudge.metrics import Metrics
from nudge.sdk.models import check_priority, check_ttl
from nudge.store import notifications as store
from nudge.store.db import Database
from nudge.text import check_text


class Senders(Protocol):
    """What sending needs (the running platform has them all)."""

    settings: Settings
    db: Database
    acceptor: Acceptor
    bus: EventBus
    metrics: Metrics


@dataclass(frozen=True)
class DirectSend:
    authorization: str | None
    app_id: str | None  # None: the app is the one the secret identifies
    uid: str | None
    message: str | None
    type: str = ""
    data: dict[str, str] | None = None
    idempotency_key: str | None = None
    # As the caller gave them (a query string's are text): checked by send_direct.
    priority: str | None = None
    ttl: int | str | None = None
    send_at: str | None = None


# How far ahead a send may be scheduled.
SEND_AT_MAX_AHEAD_S = 30 * 86_400


@dataclass(frozen=True)
class SendOptions:
    priority: str = "normal"
    ttl: int | None = None
    send_at: float | None = None  # UNIX seconds, in the future; None: now


def send_options(
    priority: str | None, ttl: int | str | None, send_at: str | None, now: float
) -> SendOptions:
    """The optional ``priority``, ``ttl`` and ``send_at`` as given (a query string's are
    text), checked: an ``Invalid`` (422) names the field."""
    if isinstance(ttl, str) and ttl.isascii() and ttl.isdigit() and len(ttl) <= 12:
        ttl = int(ttl)
    try:
        return SendOptions(
            "normal" if priority is None else check_priority(priority),
            None if ttl is None else check_ttl(ttl),
            _send_at(send_at, now),
        )
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _send_at(value: str | None, now: float) -> float | None:
    """An ISO 8601 time with its offset, at most 30 days ahead; None for a time already past."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
        t = when.timestamp() if when.tzinfo is not None else None
    except ValueError:
        raise Invalid(
            "send_at: must be an ISO 8601 time with its offset, e.g. 2026-01-31T09:00:00Z or "
            "2026-01-31T10:00:00+01:00 (in a query string, write + as %2B)"
        ) from None
    if t is None:
        raise Invalid("send_at: give the time's offset (Z for UTC, or +HH:MM / -HH:MM)")
    if t > now + SEND_AT_MAX_AHEAD_S:
        raise Invalid("send_at: at most 30 days ahead")
    return t if t > now else None


def _check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not key or len(key) > 255 or not key.isprintable():
        raise Invalid("Idempotency-Key: must be 1-255 printable characters")
    return key


async def send_direct(platform: Senders, send: DirectSend) -> tuple[Accepted, RateLimit]:
    """Accept one direct notification. Raises a ``NudgeError`` whose headers carry the limits."""
    settings = platform.settings
    key = auth.read(send.authorization, auth.APP)
    assert isinstance(key, auth.Token)  # an app secret: checked in the batch
    if send.app_id is not None:  # nothing can be looked up by an id that cannot be stored
        check_text(send.app_id, "app_id", line=True)
    invalid: NudgeError | None = None
    message = ""
    options = SendOptions()
    try:
        if send.uid is None or not send.uid.strip():
            raise Invalid("uid: required and must not be empty")
        check_text(send.uid, "uid", line=True)
        message = validate_message(send.message, settings.message_max_chars)
        _check_idempotency_key(send.idempotency_key)
        options = send_options(send.priority, send.ttl, send.send_at, time.time())
    except NudgeError as exc:
        invalid = exc
    request = NotificationRequest(
        app_id=send.app_id or "",
        # A refused request is answered right after its secret is checked: its uid and message
        # are neither looked up nor hashed.
        uid="" if invalid else send.uid or "",
        message=message,
        kind="direct",
        type=send.type,
        data=send.data or {},
        idempotency_key=None if invalid else send.idempotency_key,
        key_hash=key.hash,
        invalid=invalid,
        priority=options.priority,
        ttl=options.ttl,
        send_at=options.send_at,
    )
    if send.app_id is None:  # /api/notifications/send: the secret names the app
        app = await auth.caller(platform.db, send.authorization, auth.APP)
        assert isinstance(app, auth.App)
        request = replace(request, app_id=app.app_id)
    accepted = await platform.acceptor.accept(request)
    if not accepted.duplicate:
        platform.metrics.accepted.labels("direct").inc()
        await platform.bus.wake_workers()
    rate = accepted.rate_limit or await current_rate_limit(platform, request.app_id, request.uid)
    return accepted, rate


async def current_rate_limit(platform: Senders, app_id: str | None, uid: str | None) -> RateLimit:
    """The limit state to report on any answer (for unknown apps or users: the empty window)."""
    now = time.time()
    per_app, window = await platform.db.query(
        lambda conn: store.direct_window(conn, app_id, uid, now - HOUR)
    )
    limit = per_app or platform.settings.direct_limit_per_hour
    used, oldest = window or (0, now - HOUR)
    return RateLimit(limit, max(0, limit - used), max(0, math.ceil(oldest + HOUR - now)))


async def refusal(
    platform: Senders, exc: NudgeError, app_id: str | None, uid: str | None
) -> NudgeError:
    """Count a refused request and attach ``X-RateLimit-*`` (every answer carries them)."""
    platform.metrics.rejected.labels(str(exc.status_code)).inc()
    if "X-RateLimit-Limit" not in exc.headers:
        try:
            rate = await current_rate_limit(platform, app_id, uid)
        except Exception:  # never let the headers turn a 4xx into a 500
            rate = RateLimit(platform.settings.direct_limit_per_hour, 0, 0)
        exc.headers.update(rate.headers())
    return exc


def cancel_notification(conn: Connection, app_id: str, notification_id: str) -> dict[str, Any]:
    """Write work: cancel what of the app's notification has not gone yet (scheduled and held
    pushes too; one a worker is sending now goes on); its status after. 404 for another app's,
    409 when nothing is left to cancel."""
    notification_status(conn, app_id, notification_id)  # 404 unless it is the app's
    if not store.cancel_pending(conn, notification_id, time.time()):
        status = notification_status(conn, app_id, notification_id)
        raise Conflict(
            f"notification {notification_id!r}: nothing left to cancel (it is {status['state']})"
        )
    return notification_status(conn, app_id, notification_id)
