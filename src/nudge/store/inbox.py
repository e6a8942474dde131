"""SQL of the inbox state: read, seen and archived notifications and the unread count."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from nudge.store.models import Delivery, Notification

# A notification counts as unread until it is read or archived (ix_notifications_unread).
_UNREAD = sa.and_(Notification.read_at.is_(None), Notification.archived_at.is_(None))


def _in_inbox(now: float) -> sa.ColumnElement[bool]:
    """A scheduled notification enters the inbox at its time, unless its inbox delivery was
    cancelled by the app or expired first (the other conditions are read only for those)."""
    withdrawn = sa.exists().where(
        Delivery.notification_id == Notification.id,
        Delivery.provider == "inbox",
        Delivery.state.in_(("cancelled", "expired")),
    )
    return sa.or_(Notification.send_at.is_(None), sa.and_(Notification.send_at <= now, ~withdrawn))


# The state flags a caller may set, by the column that holds each.
STATE_COLUMNS = {
    "read": Notification.read_at,
    "seen": Notification.seen_at,
    "archived": Notification.archived_at,
}


def unread_counts(
    conn: Connection, uids: Collection[str], now: float | None = None
) -> dict[str, int]:
    """uid -> how many of the user's notifications in the inbox are unread (users with none are
    left out)."""
    if not uids:
        return {}
    rows = conn.execute(
        sa.select(Notification.uid, sa.func.count())
        .where(Notification.uid.in_(list(uids)), _UNREAD, _in_inbox(now or time.time()))
        .group_by(Notification.uid)
    )
    return {uid: int(n) for uid, n in rows}


def unread_count(conn: Connection, uid: str) -> int:
    return unread_counts(conn, [uid]).get(uid, 0)


def list_inbox(
    conn: Connection, uid: str, limit: int, cursor: str | None, *, archived: bool
) -> list[Any]:
    """A user's notifications in the inbox, newest first, older than ``cursor`` (an id) if
    given; archived ones only when ``archived``."""
    q = sa.select(Notification).where(Notification.uid == uid, _in_inbox(time.time()))
    if not archived:
        q = q.where(Notification.archived_at.is_(None))
    if cursor:
        q = q.where(Notification.id < cursor)
    return list(conn.execute(q.order_by(Notification.id.desc()).limit(limit)).all())


def set_state(
    conn: Connection, uid: str, notification_id: str, changes: dict[str, bool], now: float
) -> Any:
    """Set (True: the first time counts) or clear each flag of ``changes`` on the user's
    notification; its row afterwards, or None if the user has no such notification."""
    values: dict[str, Any] = {}
    for name, on in changes.items():
        column = STATE_COLUMNS[name]
        values[column.key] = sa.func.coalesce(column, now) if on else None
    result = conn.execute(
        sa.update(Notification)
        .where(Notification.id == notification_id, Notification.uid == uid)
        .values(values)
    )
    if not result.rowcount:
        return None
    return conn.execute(sa.select(Notification).where(Notification.id == notification_id)).first()


def read_all(conn: Connection, uid: str, now: float, up_to: str | None) -> int:
    """Mark every unread notification in the user's inbox read (only ids up to ``up_to`` if
    given, archived ones included); how many changed."""
    q = sa.update(Notification).where(
        Notification.uid == uid, Notification.read_at.is_(None), _in_inbox(now)
    )
    if up_to is not None:
        q = q.where(Notification.id <= up_to)
    return int(conn.execute(q.values(read_at=now)).rowcount)
