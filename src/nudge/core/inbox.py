"""The inbox state: read, seen and archived per notification, read-all and the unread count;
each change is told to the user's live stream (the same bus that carries delivered items)."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator
from sqlalchemy import Connection

from nudge.bus.local import EventBus
from nudge.core.notifications import notification_json
from nudge.errors import NotFound
from nudge.store import inbox as store
from nudge.store.db import Database
from nudge.text import json_text

# Bus events of this module carry ``"event": STATE``; every other inbox event is a notification
# the inbox delivery published.
STATE = "state"


class StateChange(BaseModel):
    """``PATCH .../notifications/{id}``: each flag given is set (true) or cleared (false)."""

    model_config = ConfigDict(extra="forbid")
    read: StrictBool | None = None
    seen: StrictBool | None = None
    archived: StrictBool | None = None

    @model_validator(mode="after")
    def _something(self) -> StateChange:
        if not self.changes():
            raise ValueError("give at least one of read, seen, archived (true or false)")
        return self

    def changes(self) -> dict[str, bool]:
        flags = {"read": self.read, "seen": self.seen, "archived": self.archived}
        return {name: on for name, on in flags.items() if on is not None}


class ReadAll(BaseModel):
    """``POST .../notifications/read-all``: optionally only up to (and with) one notification,
    so that what arrived after the client last looked stays unread."""

    model_config = ConfigDict(extra="forbid")
    up_to: str | None = Field(None, min_length=1, max_length=64)


def list_inbox(
    conn: Connection, uid: str, *, limit: int, cursor: str | None, archived: bool
) -> dict[str, Any]:
    """Newest first; ``cursor`` is the last id of the previous page; archived ones are left out
    unless ``archived``."""
    rows = store.list_inbox(conn, uid, limit + 1, cursor, archived=archived)
    items = [notification_json(r) for r in rows[:limit]]
    next_cursor = items[-1]["id"] if len(rows) > limit else None
    return {"items": items, "next_cursor": next_cursor}


def unread_count(conn: Connection, uid: str) -> dict[str, int]:
    return {"unread": store.unread_count(conn, uid)}


def _set_state(
    conn: Connection, uid: str, notification_id: str, changes: dict[str, bool]
) -> tuple[dict[str, Any], int]:
    """Write work: the notification after the change and the user's unread count (404 if the
    user has no such notification)."""
    row = store.set_state(conn, uid, notification_id, changes, time.time())
    if row is None:
        raise NotFound(f"notification {notification_id!r} not found for user {uid!r}")
    return notification_json(row), store.unread_count(conn, uid)


def _read_all(conn: Connection, uid: str, up_to: str | None) -> tuple[int, int]:
    changed = store.read_all(conn, uid, time.time(), up_to)
    return changed, store.unread_count(conn, uid)


async def set_state(
    db: Database, bus: EventBus, uid: str, notification_id: str, changes: dict[str, bool]
) -> dict[str, Any]:
    """Change the notification's flags; its JSON afterwards. Its new state goes to the stream."""
    note, unread = await db.write(lambda conn: _set_state(conn, uid, notification_id, changes))
    flags = {name: note[name] for name in ("read", "seen", "archived")}
    await bus.publish(uid, {"event": STATE, "id": notification_id, **flags, "unread": unread})
    return note


async def read_all(db: Database, bus: EventBus, uid: str, up_to: str | None) -> dict[str, int]:
    """Mark the user's unread notifications read; how many changed and how many stay unread.
    One event goes to the stream."""
    changed, unread = await db.write(lambda conn: _read_all(conn, uid, up_to))
    event = {"event": STATE, "read_all": True, "up_to": up_to, "changed": changed}
    await bus.publish(uid, {**event, "unread": unread})
    return {"changed": changed, "unread": unread}


def stream_message(event: dict[str, Any]) -> dict[str, str]:
    """The Server-Sent Event of a bus event: ``state`` for a state change, else ``notification``
    (with the notification's id as the event id)."""
    if event.get("event") == STATE:
        return {"event": STATE, "data": json_text({k: v for k, v in event.items() if k != "event"})}
    return {"event": "notification", "id": event.get("id", ""), "data": json_text(event)}
