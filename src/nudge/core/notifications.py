"""Accepting notifications (durably, with their deliveries) and reading them back.

``accept_batch`` is the one write path for direct, proactive and admin notifications: for a whole
batch of requests, the store's lookups (:func:`nudge.store.notifications.find_for_acceptance`),
then :func:`decide` (pure: each request checked in order, in the order Omi answers: secret (401),
user and install (404), repeat (idempotency key or the same message within the duplicate window:
the first result again), hourly limit (429)), then the accepted rows' inserts. A refused request
writes nothing; an accepted one writes the notification, one delivery per target (the inbox and
each device) and the app chat line.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from nudge import auth
from nudge.core import preferences
from nudge.errors import Invalid, NotFound, NudgeError, RateLimited
from nudge.ids import new_id
from nudge.store import notifications as store
from nudge.text import check_text

HOUR = 3600.0
# The queue claims due deliveries in ``next_attempt_at`` order: a high-priority notification due
# now is queued as if it had waited this long, so it goes before what was queued in that time.
HIGH_HEAD_START_S = 60.0


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
    priority: str = "normal"  # low | normal | high
    ttl: float | None = None  # seconds from when it is due (send_at, or now) until it expires
    send_at: float | None = None  # a scheduled send (UNIX seconds); None: now


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
    # What the user's preferences did to its pushes ("" none, muted, quiet, digest) and why; not
    # in the app's answer (Omi's callers see no change), shown in traces and the status.
    hold: str = ""
    hold_reason: str = ""

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


@dataclass
class Window:
    """The hourly window of one (kind, app, user), as the batch consumes it: how many it counts
    and when the oldest of them was counted until (the end of its minute bucket, see
    ``store.bucket_end``): that slot frees an hour later."""

    used: int
    oldest: float | None


@dataclass
class Decision:
    """What a batch comes to: one result (or refusal) per request, and the rows to insert."""

    results: list[Accepted | NudgeError] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    chats: list[dict[str, Any]] = field(default_factory=list)
    repeats: set[str] = field(default_factory=set)  # notifications answered again
    # (index in results, uid) of accepted pushes whose user has a daily cap (counted after)
    capped: list[tuple[int, str]] = field(default_factory=list)
    counted: list[dict[str, Any]] = field(default_factory=list)  # what the windows' buckets add


def windowed(requests: Sequence[NotificationRequest], limits: Limits) -> set[tuple[str, str, str]]:
    """The (kind, app, uid) windows the batch counts against."""
    return {
        (r.kind, r.app_id, r.uid)
        for r in requests
        if r.kind == "direct" or (r.kind == "message" and limits.message_per_hour > 0)
    }


def check_sender(request: NotificationRequest, owners: dict[str, str | None]) -> None:
    """401 unless the request's secret (if any) is a live key of its app (``nudge.auth``)."""
    if request.key_hash is not None:
        refusal = auth.app_key_refusal(owners.get(request.key_hash), request.app_id)
        if refusal is not None:
            raise refusal


def check_target(request: NotificationRequest, found: store.Found) -> Any:
    """404 unless the app exists and the user installed it; returns the app."""
    app = found.apps.get(request.app_id)
    if app is None:
        raise NotFound(f"app {request.app_id!r} not found")
    if (request.app_id, request.uid) not in found.installed:
        if request.uid not in found.users:
            raise NotFound(f"user {request.uid!r} not found: check the uid")
        raise NotFound(f"user {request.uid!r} has not installed app {request.app_id!r}")
    return app


def repeat_of(
    request: NotificationRequest,
    digest: str,
    by_key: dict[tuple[str, str], str],
    recent: dict[str, str],
) -> str | None:
    """The notification this request repeats (same idempotency key, or same message lately)."""
    first = None
    if request.idempotency_key is not None:
        first = by_key.get((request.app_id, request.idempotency_key))
    return first or recent.get(digest)


def hourly_limit(request: NotificationRequest, per_app: int | None, limits: Limits) -> int:
    """The request's hourly cap; 0: none."""
    if request.kind == "direct":
        return int(per_app or limits.default_per_hour)
    return limits.message_per_hour if request.kind == "message" else 0


def take_slot(window: Window, limit: int, kind: str, now: float) -> RateLimit:
    """Count one more in ``window``; its state for the headers, or 429 when it is full."""
    if window.used >= limit:
        reset = max(1, math.ceil((window.oldest or store.bucket_end(now)) + HOUR - now))
        rate = RateLimit(limit=limit, remaining=0, reset=reset)
        what = "notifications" if kind == "direct" else "webhook message answers"
        raise RateLimited(
            f"rate limited: at most {limit} {what} per user per hour for this app; "
            f"retry in {reset} s",
            retry_after=reset,
            headers=rate.headers(),
        )
    window.used += 1
    window.oldest = window.oldest or store.bucket_end(now)
    return RateLimit(limit, limit - window.used, max(0, math.ceil(window.oldest + HOUR - now)))


def window_state(window: Window, limit: int, now: float) -> RateLimit:
    """The window's state for the headers, taking no slot (a repeat's answer)."""
    reset = 0 if window.oldest is None else max(0, math.ceil(window.oldest + HOUR - now))
    return RateLimit(limit, max(0, limit - window.used), reset)


def decide(
    requests: Sequence[NotificationRequest],
    digests: Sequence[str],
    found: store.Found,
    limits: Limits,
    now: float,
) -> Decision:
    """Check each request in order against what the lookups found; the rows of those accepted.
    Later requests of the batch see the earlier ones (repeats, hourly windows). Repeats and
    refusals use no slot."""
    windows = {
        key: Window(*found.windows.get(key, (0, None))) for key in windowed(requests, limits)
    }
    taken = dict.fromkeys(windows, 0)
    recent, by_key = dict(found.recent), dict(found.by_key)
    out = Decision()
    for request, digest in zip(requests, digests):
        try:
            check_sender(request, found.owners)
            if request.invalid is not None:
                raise request.invalid
            app = check_target(request, found)
            key = (request.kind, request.app_id, request.uid)
            window = windows.get(key)
            limit = hourly_limit(request, app.direct_limit_per_hour, limits)
            first = repeat_of(request, digest, by_key, recent)
            if first is not None:
                out.repeats.add(first)
                rate = None if window is None else window_state(window, limit, now)
                out.results.append(Accepted(first, -1, duplicate=True, rate_limit=rate))
                continue
            rate = None
            if window is not None:
                rate = take_slot(window, limit, request.kind, now)
                taken[key] += 1
        except NudgeError as exc:
            out.results.append(exc)
            continue
        notification_id = new_id("n")
        devices = found.devices.get(request.uid, {})
        user = found.user_preferences.get(request.uid)
        hold = preferences.hold_for(
            request.kind,
            request.priority,
            found.app_preferences.get((request.app_id, request.uid)),
            user,
            request.send_at or now,
        )
        if hold.kind == "muted":
            devices = {}  # kept in the inbox, no push (docs/api.md, "Preferences")
        elif devices and user and user.get("daily_cap"):
            out.capped.append((len(out.results), request.uid))
        _add_rows(out, request, app.name, notification_id, digest, devices, now, hold)
        recent[digest] = notification_id
        if request.idempotency_key is not None:
            by_key[(request.app_id, request.idempotency_key)] = notification_id
        out.results.append(
            Accepted(notification_id, len(devices), False, rate, hold.kind, hold.reason)
        )
    minute = store.bucket_of(now)
    out.counted = [
        {"uid": uid, "app_id": app_id, "kind": kind, "minute": minute, "count": n}
        for (kind, app_id, uid), n in sorted(taken.items())
        if n
    ]
    return out


def _add_rows(
    out: Decision,
    request: NotificationRequest,
    app_name: str,
    notification_id: str,
    digest: str,
    devices: dict[str, str],
    now: float,
    hold: preferences.Hold = preferences.NO_HOLD,
) -> None:
    """The rows of an accepted request: the notification, one delivery per target (the inbox
    and each device; a held push due when its hold ends) and the app chat line."""
    data = {
        **request.data,
        "app_id": request.app_id,
        "notification_id": notification_id,
        "type": request.type or request.kind,
        "navigate_to": f"/chat/{request.app_id}",
    }
    out.notifications.append(
        {
            "id": notification_id,
            "app_id": request.app_id,
            "uid": request.uid,
            "kind": request.kind,
            "type": request.type,
            "title": f"{app_name} says",
            "body": request.message,
            "data": json.dumps(data),
            "dedupe_hash": digest,
            "collapse_key": digest[:32],
            "idempotency_key": request.idempotency_key,
            "created_at": now,
            "priority": request.priority,
            "expires_at": None if request.ttl is None else (request.send_at or now) + request.ttl,
            "send_at": request.send_at,
            "hold": hold.kind,
            "hold_reason": hold.reason,
        }
    )
    due = request.send_at or now
    if request.priority == "high" and due <= now:
        due -= HIGH_HEAD_START_S  # see HIGH_HEAD_START_S; a scheduled one never goes early
    sends = [*([("inbox", None)] if hold.inbox else []), *((p, d) for d, p in devices.items())]
    out.deliveries += [
        {
            "id": new_id("d"),
            "notification_id": notification_id,
            "provider": provider,
            "device_id": device_id,
            "state": "queued" if provider == "inbox" or hold.until is None else store.HELD_STATE,
            "attempts": 0,
            "next_attempt_at": due if provider == "inbox" or hold.until is None else hold.until,
            "last_error": "",
            "created_at": now,
            "updated_at": now,
        }
        for provider, device_id in sends
    ]
    out.chats.append(
        {
            "uid": request.uid,
            "app_id": request.app_id,
            "sender": "app",
            "text": request.message,
            "notification_id": notification_id,
            "created_at": now,
        }
    )


def accept_batch(
    conn: Connection,
    requests: Sequence[NotificationRequest],
    limits: Limits,
    *,
    lock_rows: bool = False,
) -> list[Accepted | NudgeError]:
    """Validate and queue a batch in one unit of work (write work: run it with
    ``Database.write``): lookups, decisions, inserts. One result (or refusal) per request."""
    now = time.time()
    digests = [dedupe_hash(r.app_id, r.uid, r.type, r.message) for r in requests]
    lookups = store.Lookups(
        pairs={(r.app_id, r.uid) for r in requests},
        key_hashes={r.key_hash for r in requests if r.key_hash is not None},
        keys={(r.app_id, r.idempotency_key) for r in requests if r.idempotency_key is not None},
        digests=set(digests),
        dedupe_since=now - limits.dedupe_window_s,
        windows=windowed(requests, limits),
        window_since=now - HOUR,
    )
    found = store.find_for_acceptance(conn, lookups, lock_rows=lock_rows)
    decision = decide(requests, digests, found, limits, now)
    if decision.capped:
        _apply_daily_caps(conn, decision, found.user_preferences, now)
    store.insert_accepted(
        conn, decision.notifications, decision.deliveries, decision.chats, decision.counted
    )
    if not decision.repeats:
        return decision.results
    counts = store.device_counts(conn, decision.repeats)
    return [
        replace(r, devices=counts.get(r.notification_id, 0))
        if isinstance(r, Accepted) and r.duplicate
        else r
        for r in decision.results
    ]


def _apply_daily_caps(
    conn: Connection,
    decision: Decision,
    user_preferences: dict[str, dict[str, Any] | None],
    now: float,
) -> None:
    """Count the decision's capped pushes (``preferences.over_daily_cap``, in the acceptance
    transaction); those over their user's cap keep only their inbox delivery, marked muted."""
    settings = [(uid, user_preferences[uid] or {}) for _, uid in decision.capped]
    reasons: dict[str, str] = {}
    for (index, _), (_, user), over in zip(
        decision.capped, settings, preferences.over_daily_cap(conn, settings, now)
    ):
        result = decision.results[index]
        if over and isinstance(result, Accepted):
            reasons[result.notification_id] = preferences.cap_reason(user)
            decision.results[index] = replace(
                result, devices=0, hold="muted", hold_reason=reasons[result.notification_id]
            )
    if not reasons:
        return
    for row in decision.notifications:
        if row["id"] in reasons:
            row["hold"], row["hold_reason"] = "muted", reasons[row["id"]]
    decision.deliveries = [
        d
        for d in decision.deliveries
        if d["provider"] == "inbox" or d["notification_id"] not in reasons
    ]


def accept_notification(
    conn: Connection,
    request: NotificationRequest,
    *,
    default_limit_per_hour: int,
    dedupe_window_s: float,
    lock_rows: bool = False,
) -> Accepted:
    """Accept one notification (a batch of one; write work); raises its refusal."""
    limits = Limits(default_limit_per_hour, dedupe_window_s)
    (result,) = accept_batch(conn, [request], limits, lock_rows=lock_rows)
    if isinstance(result, NudgeError):
        raise result
    return result


def notification_json(row: Any) -> dict[str, Any]:
    """A notification row as the API answers it (the inbox, the status endpoint)."""
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
        "seen": row.seen_at is not None,
        "archived": row.archived_at is not None,
        "priority": row.priority,
        "expires_at": row.expires_at,
        "send_at": row.send_at,
        "hold": row.hold,
        "hold_reason": row.hold_reason,
    }


def get_notification(conn: Connection, notification_id: str) -> dict[str, Any]:
    row = store.get_notification(conn, notification_id)
    if row is None:
        raise NotFound(f"notification {notification_id!r} not found")
    return notification_json(row) | {"uid": row.uid}


def notification_status(conn: Connection, app_id: str, notification_id: str) -> dict[str, Any]:
    """The notification and each of its deliveries, for the app that sent it."""
    note = get_notification(conn, notification_id)
    if note["app_id"] != app_id:
        raise NotFound(f"notification {notification_id!r} not found for app {app_id!r}")
    rows = store.deliveries_of(conn, notification_id)
    now = time.time()
    note["state"], note["reason"] = status_summary(note, rows, now)
    note["deliveries"] = [
        {
            "id": r.id,
            "provider": r.provider,
            "device_id": r.device_id,
            "state": _shown_state(r, now),
            "attempts": r.attempts,
            "last_error": r.last_error,
            # Not before it was made (a high-priority one is queued as if it had waited).
            "next_attempt_at": max(r.next_attempt_at, r.created_at)
            if r.state in store.WAITING_STATES
            else None,
            "delivered_at": r.delivered_at,
        }
        for r in rows
    ]
    return note


def _shown_state(delivery: Any, now: float) -> str:
    """A delivery's state as the status shows it: one being sent as waiting (``queued``, or
    ``retrying`` after a failed attempt), a held push whose window has ended as ``queued``."""
    if delivery.state == "sending":
        return "retrying" if delivery.attempts else "queued"
    if delivery.state == store.HELD_STATE and delivery.next_attempt_at <= now:
        return "queued"
    return str(delivery.state)


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def status_summary(note: dict[str, Any], deliveries: Sequence[Any], now: float) -> tuple[str, str]:
    """The one ``state`` of a notification and why (docs/api.md, "Status"), from its row and
    its deliveries' rows: what still waits decides first, then how the rest ended."""
    states = [d.state for d in deliveries]
    gone = sum(s in ("delivered", "merged") for s in states)
    if "cancelled" in states:
        went = f"; {gone} of {len(states)} deliveries had gone before" if gone else ""
        return "cancelled", f"cancelled by the app{went}"
    if note["hold"] == "muted":
        return "muted", note["hold_reason"]
    expired = f"its ttl ran out at {_utc(note['expires_at'] or now)} before it could be sent"
    pending = [d for d in deliveries if d.state in (*store.WAITING_STATES, "sending")]
    if pending:
        if note["expires_at"] is not None and note["expires_at"] <= now:
            return "expired", expired
        if any(d.state == "sending" for d in pending):
            return "sending", ""
        if note["send_at"] is not None and note["send_at"] > now:
            return "scheduled", f"scheduled for {_utc(note['send_at'])}"
        if any(d.state == store.HELD_STATE and d.next_attempt_at > now for d in pending):
            return "held", note["hold_reason"]
        return "queued", next((d.last_error for d in pending if d.state == "retrying"), "")
    if "expired" in states:
        return "expired", expired
    if gone == len(states):
        return "delivered", ""
    failure = next(d.last_error for d in deliveries if d.state not in ("delivered", "merged"))
    return ("partly_delivered" if gone else "failed"), failure
