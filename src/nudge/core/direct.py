"""Direct notifications from apps (contract.md §1): auth, checks, rate-limit headers, accept."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Protocol

from nudge import auth
from nudge.bus.local import EventBus
from nudge.config import Settings
from nudge.core.acceptor import Acceptor
from nudge.core.notifications import (
    HOUR,
    Accepted,
    NotificationRequest,
    RateLimit,
    validate_message,
)
from nudge.errors import Invalid, NudgeError
from nudge.metrics import Metrics
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
    try:
        if send.uid is None or not send.uid.strip():
            raise Invalid("uid: required and must not be empty")
        check_text(send.uid, "uid", line=True)
        message = validate_message(send.message, settings.message_max_chars)
        _check_idempotency_key(send.idempotency_key)
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
