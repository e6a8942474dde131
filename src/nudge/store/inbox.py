"""SQL of the inbox state: read, seen and archived notifications and the unread count."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy import Connection

from nudge.store.models import Notification

# A notification counts as unread until it is read or archived (ix_notifications_unread).
_UNREAD = sa.and_(Notification.read_at.is_(None), Notification.archived_at.is_(None))


def unread_counts(conn: Connection, uids: Collection[str]) -> dict[str, int]:
    """uid -> how many of the user's notifications are unread (users with none are left out)."""
    if not uids:
        return {}
    rows = conn.execute(
        sa.select(Notification.uid, sa.func.count())
        .where(Notification.uid.in_(list(uids)), _UNREAD)
        .group_by(Notification.uid)
    )
    return {uid: int(n) for uid, n in rows}
