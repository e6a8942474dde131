"""SQL of the user's preferences: ``users.preferences`` and each install's ``preferences``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from nudge.store.models import Delivery, Device, Install, Notification, RateCounter, User
from nudge.store.notifications import IS_HELD, WAITING_STATES


def read(
    conn: Connection, uid: str
) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any] | None]] | None:
    """The user's own settings and app id -> the settings of each installed app (None: the
    defaults), in one query; None when there is no such user."""
    rows = conn.execute(
        sa.select(User.preferences, Install.app_id, Install.preferences.label("app_preferences"))
        .outerjoin(Install, Install.uid == User.uid)
        .where(User.uid == uid)
        .order_by(Install.app_id)
    ).all()
    if not rows:
        return None
    apps = {r.app_id: r.app_preferences for r in rows if r.app_id is not None}
    return rows[0].preferences, apps


def write(
    conn: Connection,
    uid: str,
    user: dict[str, Any] | None,
    apps: dict[str, dict[str, Any] | None],
) -> None:
    """Replace the user's settings and those of the installed apps named in ``apps`` (None:
    SQL NULL, the defaults)."""

    def stored(value: dict[str, Any] | None) -> Any:
        return sa.null() if value is None else value

    conn.execute(sa.update(User).where(User.uid == uid).values(preferences=stored(user)))
    for app_id, value in sorted(apps.items()):
        conn.execute(
            sa.update(Install)
            .where(Install.uid == uid, Install.app_id == app_id)
            .values(preferences=stored(value))
        )


def uncount(conn: Connection, key: str) -> None:
    """Take back one count of the ``rate_counters`` row ``key`` (a push the cap refused: the
    row counts those that went, so a raised cap lets more through the same day)."""
    conn.execute(
        sa.update(RateCounter).where(RateCounter.key == key).values(count=RateCounter.count - 1)
    )


def withdraw_pushes(
    conn: Connection, uid: str, app_id: str, kinds: Sequence[str] | None, reason: str
) -> int:
    """Delete the device deliveries still waiting (queued, retrying or held) of the
    user's notifications from ``app_id`` (of ``kinds``; None: all), and mark those
    notifications muted with ``reason``; how many notifications. A delivery a worker holds
    (``sending``) is left to finish."""
    mine = sa.select(Notification.id).where(Notification.uid == uid, Notification.app_id == app_id)
    if kinds is not None:
        mine = mine.where(Notification.kind.in_(list(kinds)))
    withdrawn = conn.execute(
        sa.delete(Delivery)
        .where(
            Delivery.notification_id.in_(mine),
            Delivery.provider != "inbox",
            Delivery.state.in_(WAITING_STATES),
        )
        .returning(Delivery.notification_id)
    ).all()
    ids = sorted({row.notification_id for row in withdrawn})
    if ids:
        conn.execute(
            sa.update(Notification)
            .where(Notification.id.in_(ids))
            .values(hold="muted", hold_reason=reason)
        )
    return len(ids)


def held_pushes(conn: Connection, uid: str) -> list[Any]:
    """The user's pushes still held (quiet hours, digest), with what their hold was decided
    from. Found device by device in ix_deliveries_held (``IS_HELD``), not through the user's
    whole history."""
    return list(
        conn.execute(
            sa.select(
                Delivery.id,
                Delivery.next_attempt_at,
                Notification.id.label("notification_id"),
                Notification.app_id,
                Notification.kind,
                Notification.priority,
                Notification.created_at,
                Notification.send_at,
                Notification.hold,
                Notification.hold_reason,
            )
            .join(Notification, Notification.id == Delivery.notification_id)
            .where(Delivery.device_id.in_(sa.select(Device.id).where(Device.uid == uid)), IS_HELD)
        ).all()
    )


def retime_pushes(
    conn: Connection,
    due: dict[str, float],
    holds: dict[str, tuple[str, str]],
    now: float,
) -> None:
    """Held deliveries (id -> when they are due now) and their notifications (id -> hold and
    reason) as new preferences hold them."""
    for delivery_id, at in due.items():
        conn.execute(
            sa.update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(next_attempt_at=at, updated_at=now)
        )
    for notification_id, (hold, reason) in holds.items():
        conn.execute(
            sa.update(Notification)
            .where(Notification.id == notification_id)
            .values(hold=hold, hold_reason=reason)
        )
