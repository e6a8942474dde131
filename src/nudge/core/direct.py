"""Direct notifications from apps (contract.md §1): auth, checks, rate-limit headers, accept."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol

from nudge.bus.local import EventBus
from nudge.config import Settings
from nudge.core.acceptor import Acceptor
from nudge.core.apps import app_for_secret, parse_bearer
from nudge.core.notifications import (
    Accepted,
    NotificationRequest,
    RateLimit,
    validate_message,
)
from nudge.core.notifications import current_rate_limit as window_state
from nudge.errors import Invalid, NudgeError, Unauthorized
from nudge.ids import APP_SECRET_RE, hash_secret
from nudge.metrics import Metrics
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
    token = parse_bearer(send.authorization)
    if not APP_SECRET_RE.match(token):
        raise Unauthorized("malformed app secret: expected 'sk_' followed by 32 hex characters")
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
        key_hash=hash_secret(token),
        invalid=invalid,
    )
    if send.app_id is None:  # /api/notifications/send: the secret names the app
        async with platform.db.read() as conn:
            request = replace(request, app_id=await app_for_secret(conn, send.authorization))
    accepted = await platform.acceptor.accept(request)
    if not accepted.duplicate:
        platform.metrics.accepted.labels("direct").inc()
        await platform.bus.wake_workers()
    rate = accepted.rate_limit or await current_rate_limit(platform, request.app_id, request.uid)
    return accepted, rate


async def current_rate_limit(platform: Senders, app_id: str | None, uid: str | None) -> RateLimit:
    """The limit state to report on any answer (for unknown apps or users: the empty window)."""
    default = platform.settings.direct_limit_per_hour
    return await platform.db.query(
        partial(window_state, app_id=app_id, uid=uid, default_per_hour=default)
    )


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
