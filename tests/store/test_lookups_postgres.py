"""PostgreSQL's acceptance lookups (two UNION ALL statements, the install rows locked) find what
the plain lookups find, part by part."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Connection, update

from nudge.core import apps, users
from nudge.core.manifest import Manifest
from nudge.core.notifications import (
    HOUR,
    Limits,
    NotificationRequest,
    accept_batch,
    dedupe_hash,
    windowed,
)
from nudge.ids import hash_secret
from nudge.net.guard import HostAllowList
from nudge.store import notifications as store
from nudge.store.db import Database
from nudge.store.migrate import upgrade
from nudge.store.models import Install, User

LIMITS = Limits(default_per_hour=100, dedupe_window_s=60)


@pytest.fixture
async def db(postgres_url: str) -> Database:
    """A migrated PostgreSQL database: the two-statement lookups are PostgreSQL's alone."""
    await upgrade(postgres_url)
    database = Database(postgres_url)
    yield database  # type: ignore[misc]
    await database.close()


def seed(conn: Connection) -> tuple[str, str, str, str, str]:
    """Two apps (one with a revoked key), u1 with both installed, a device and preferences,
    u2 with none, and notifications already sent (repeats, keys and windows to find)."""
    first = apps.create_app(conn, Manifest(name="First"), direct_limit_per_hour=7)
    second = apps.create_app(conn, Manifest(name="Second"))
    revoked = apps.create_key(conn, first["app_id"])
    apps.revoke_key(conn, first["app_id"], revoked["key_id"])
    for uid in ("u1", "u2"):
        users.create_user(conn, users.NewUser(uid=uid, name=uid))
    for app in (first, second):
        users.install_app(conn, "u1", app["app_id"], [])
    users.add_device(
        conn,
        "u1",
        users.NewDevice(platform="log", token="token-1"),
        webpush_hosts=HostAllowList.parse("*"),
    )
    conn.execute(update(User).where(User.uid == "u1").values(preferences={"daily_cap": 5}))
    conn.execute(
        update(Install)
        .where(Install.uid == "u1", Install.app_id == second["app_id"])
        .values(preferences={"muted": True})
    )
    sent = [
        NotificationRequest(app_id=first["app_id"], uid="u1", message="one"),
        NotificationRequest(
            app_id=second["app_id"], uid="u1", message="two", idempotency_key="key-2"
        ),
    ]
    accept_batch(conn, sent, LIMITS, lock_rows=True)
    return (
        first["app_id"],
        second["app_id"],
        hash_secret(first["app_secret"]),
        hash_secret(second["app_secret"]),
        hash_secret(revoked["app_secret"]),
    )


async def test_both_lookups_find_the_same(db: Database) -> None:
    first, second, first_key, second_key, revoked_key = await db.write_keyed(seed)
    batch = [
        NotificationRequest(app_id=first, uid="u1", message="one", key_hash=first_key),
        NotificationRequest(
            app_id=second, uid="u1", message="new", key_hash=second_key, idempotency_key="key-2"
        ),
        NotificationRequest(app_id=first, uid="u2", message="x", key_hash=revoked_key),
        NotificationRequest(app_id=second, uid="nobody", message="y", idempotency_key="none"),
        NotificationRequest(app_id="app_missing", uid="u1", message="z", key_hash="no-such"),
    ]
    now = time.time()
    lookups = store.Lookups(
        pairs={(r.app_id, r.uid) for r in batch},
        key_hashes={r.key_hash for r in batch if r.key_hash is not None},
        keys={(r.app_id, r.idempotency_key) for r in batch if r.idempotency_key},
        digests={dedupe_hash(r.app_id, r.uid, r.type, r.message) for r in batch},
        dedupe_since=now - 60,
        windows=windowed(batch, LIMITS),
        window_since=now - HOUR,
    )

    def both(conn: Connection) -> tuple[store.Found, store.Found]:
        return (
            store.find_for_acceptance(conn, lookups, lock_rows=True),
            store.find_for_acceptance(conn, lookups, lock_rows=False),
        )

    locked, plain = await db.write_keyed(both)
    assert {a: (r.name, r.direct_limit_per_hour) for a, r in locked.apps.items()} == {
        first: ("First", 7),
        second: ("Second", None),
    }
    assert locked.apps.keys() == plain.apps.keys()
    assert (
        locked.owners == plain.owners == {first_key: first, second_key: second, revoked_key: None}
    )
    assert locked.installed == plain.installed == {(first, "u1"), (second, "u1")}
    assert locked.devices == plain.devices and list(locked.devices) == ["u1"]
    # Of the users of pairs not installed (u1 has not installed the missing app), those that are.
    assert locked.users == plain.users == {"u1", "u2"}
    assert locked.app_preferences == plain.app_preferences
    assert locked.app_preferences[(second, "u1")] == {"muted": True}
    assert locked.user_preferences == plain.user_preferences == {"u1": {"daily_cap": 5}}
    assert locked.by_key == plain.by_key and list(locked.by_key) == [(second, "key-2")]
    assert locked.recent == plain.recent and len(locked.recent) == 1  # "one" to u1 repeats
    assert locked.windows == plain.windows
    assert {key: used for key, (used, _) in locked.windows.items()} == {
        ("direct", first, "u1"): 1,
        ("direct", second, "u1"): 1,
    }
