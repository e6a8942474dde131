"""SQL of notifications, their deliveries (the delivery queue), the hourly windows'
per-minute counters and the rate_counters windows.

Plain synchronous functions on a ``Connection``: run them with ``Database.write`` / ``query`` /
``write_alone``. The hot statements are built once at import (:class:`~nudge.store.fast.Statement`):
building and caching a statement per call is a measurable part of the hot paths.
"""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Dialect
from sqlalchemy.dialects import postgresql, sqlite

from nudge.ids import id_floor
from nudge.store.db import Database
from nudge.store.fast import Statement
from nudge.store.models import (
    App,
    AppKey,
    Base,
    ChatMessage,
    Delivery,
    Device,
    Install,
    Notification,
    RateCounter,
    User,
    WindowBucket,
)

# Acceptance. Pairs are looked up as ``a IN (...) AND b IN (...)`` and the extra combinations
# dropped in Python: SQLite cannot search an index for a row-value ``(a, b) IN (...)`` list and
# scans the whole index instead (which grew with every notification kept).

# The apps, each with those of the batch's keys that are its own (one query where two would do:
# each statement costs more in SQLAlchemy than in SQLite). Keys of other apps are looked up only
# when a secret matched none.
_APPS = Statement(
    sa.select(App.id, App.name, App.direct_limit_per_hour, AppKey.key_hash, AppKey.revoked_at)
    .outerjoin(
        AppKey,
        (AppKey.app_id == App.id) & AppKey.key_hash.in_(sa.bindparam("hashes", expanding=True)),
    )
    .where(App.id.in_(sa.bindparam("ids", expanding=True)))
)
_KEYS = Statement(
    sa.select(AppKey.key_hash, AppKey.app_id, AppKey.revoked_at).where(
        AppKey.key_hash.in_(sa.bindparam("hashes", expanding=True))
    )
)
_USERS = Statement(sa.select(User.uid).where(User.uid.in_(sa.bindparam("uids", expanding=True))))
# The installs, each with its user's devices and both levels of the user's preferences: the
# targets of every accepted notification, and what the user allows them.
_TARGETS_QUERY = (
    sa.select(
        Install.app_id,
        Install.uid,
        Device.id.label("device_id"),
        Device.platform,
        Install.preferences.label("app_preferences"),
        User.preferences.label("user_preferences"),
    )
    .join(User, User.uid == Install.uid)
    .outerjoin(Device, Device.uid == Install.uid)
    .where(
        Install.app_id.in_(sa.bindparam("app_ids", expanding=True)),
        Install.uid.in_(sa.bindparam("uids", expanding=True)),
    )
)
_TARGETS = Statement(_TARGETS_QUERY)
_BY_IDEMPOTENCY_KEY = Statement(
    sa.select(Notification.app_id, Notification.idempotency_key, Notification.id).where(
        Notification.app_id.in_(sa.bindparam("app_ids", expanding=True)),
        Notification.idempotency_key.in_(sa.bindparam("keys", expanding=True)),
    )
)
_RECENT = Statement(
    sa.select(Notification.dedupe_hash, Notification.id).where(
        Notification.dedupe_hash.in_(sa.bindparam("digests", expanding=True)),
        Notification.created_at > sa.bindparam("since"),
    )
)


# The hourly windows are counted in buckets of a minute (``window_buckets``): a window is the
# buckets from the one holding "an hour ago" to the current one, 61 at most, so it never holds
# less than the last hour. Each (uid, app, kind) is one range of the primary key; the extra
# combinations of the three lists are dropped in Python.
BUCKET_S = 60
_WINDOWS = Statement(
    sa.select(
        WindowBucket.uid,
        WindowBucket.app_id,
        WindowBucket.kind,
        sa.func.sum(WindowBucket.count).label("used"),
        sa.func.min(WindowBucket.minute).label("first"),
    )
    .where(
        WindowBucket.uid.in_(sa.bindparam("uids", expanding=True)),
        WindowBucket.app_id.in_(sa.bindparam("app_ids", expanding=True)),
        WindowBucket.kind.in_(sa.bindparam("kinds", expanding=True)),
        WindowBucket.minute >= sa.bindparam("since"),
    )
    .group_by(WindowBucket.uid, WindowBucket.app_id, WindowBucket.kind)
)


def bucket_of(t: float) -> int:
    """The minute bucket that time ``t`` is counted in."""
    return int(t // BUCKET_S)


def bucket_end(t: float) -> float:
    """When the bucket of ``t`` ends: a notification counted in it leaves the window an hour
    after that."""
    return float((bucket_of(t) + 1) * BUCKET_S)


def _windows(
    conn: Connection, keys: set[tuple[str, str, str]], since: float
) -> dict[tuple[str, str, str], tuple[int, float]]:
    """(kind, app, uid) -> how many were counted since the bucket of ``since``, and the end of
    the oldest bucket counted (see :func:`bucket_end`); only windows that are not empty."""
    params = {
        "uids": list({u for _, _, u in keys}),
        "app_ids": list({a for _, a, _ in keys}),
        "kinds": list({k for k, _, _ in keys}),
        "since": bucket_of(since),
    }
    counts: dict[tuple[str, str, str], tuple[int, float]] = {}
    for uid, app_id, kind, used, first in _WINDOWS.rows(conn, params):
        if (kind, app_id, uid) in keys:
            counts[(kind, app_id, uid)] = (int(used), bucket_end(int(first) * BUCKET_S))
    return counts


# PostgreSQL: the lookups as two statements, each one round trip and one prepared statement
# for any batch (its lists are arrays), run as SQL text on the driver (SQLAlchemy's compiling
# and IN-list expansion cost more than PostgreSQL's work). Rows of several kinds come as one
# UNION ALL, tagged by their first column.
#
# First the install rows, locked in the order of the primary key (batches written at once, and
# other processes, wait for one another in turn and never in a circle: a deadlock), with their
# devices and preferences ('t'); beside them the batch's apps ('a') and the keys of its secrets,
# whatever their app ('k'), which the lock does not guard.
_LOCK_SQL = """
WITH t AS (
  SELECT i.app_id, i.uid, d.id AS device_id, d.platform,
         i.preferences::text AS app_preferences, u.preferences::text AS user_preferences
  FROM installs i JOIN users u ON u.uid = i.uid LEFT JOIN devices d ON d.uid = i.uid
  WHERE i.app_id = ANY($1::varchar[]) AND i.uid = ANY($2::varchar[])
  ORDER BY i.uid, i.app_id
  FOR UPDATE OF i
)
SELECT 't'::text, app_id::text, uid::text, device_id::text, platform::text, NULL::integer,
       NULL::float8, app_preferences, user_preferences FROM t
UNION ALL
SELECT 'a', id, name, NULL, NULL, direct_limit_per_hour, NULL, NULL, NULL
FROM apps WHERE id = ANY($1::varchar[])
UNION ALL
SELECT 'k', key_hash, app_id, NULL, NULL, NULL, revoked_at, NULL, NULL
FROM app_keys WHERE key_hash = ANY($3::varchar[])
"""
# Then, in a statement of its own (under READ COMMITTED a statement reads with the snapshot of
# its start: one taken after the lock sees what the batches it waited for wrote): the repeats
# by digest ('r', always) and, when the batch has any, by idempotency key ('i'), the users of
# pairs not installed ('u') and the hourly windows ('w': used, first bucket). A part with
# nothing to look up is left out: planned with empty arrays, PostgreSQL read a whole index.
_AFTER_LOCK_PARTS = {
    "r": (
        "SELECT 'r'::text, dedupe_hash::text, id::text, NULL::text, NULL::bigint, NULL::bigint"
        " FROM notifications WHERE dedupe_hash = ANY({}::varchar[]) AND created_at > {}::float8"
    ),
    "i": (
        "SELECT 'i', app_id, idempotency_key, id, NULL, NULL FROM notifications"
        " WHERE app_id = ANY({}::varchar[]) AND idempotency_key = ANY({}::varchar[])"
    ),
    "u": "SELECT 'u', uid, NULL, NULL, NULL, NULL FROM users WHERE uid = ANY({}::varchar[])",
    "w": (
        "SELECT 'w', uid, app_id, kind, sum(count), min(minute) FROM window_buckets"
        " WHERE uid = ANY({}::varchar[]) AND app_id = ANY({}::varchar[])"
        " AND kind = ANY({}::varchar[]) AND minute >= {}::integer GROUP BY uid, app_id, kind"
    ),
}


@lru_cache(maxsize=8)
def _after_lock_sql(parts: str) -> str:
    """The UNION ALL of these ``_AFTER_LOCK_PARTS``, their parameters numbered in order."""
    numbered, count = [], 0
    for part in parts:
        sql = _AFTER_LOCK_PARTS[part]
        n = sql.count("{}")
        numbered.append(sql.format(*(f"${count + i + 1}" for i in range(n))))
        count += n
    return " UNION ALL ".join(numbered)


@dataclass(frozen=True)
class AppFound:
    """What acceptance needs of an app (PostgreSQL's lookups; SQLite's give the row)."""

    id: str
    name: str
    direct_limit_per_hour: int | None


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(frozen=True)
class Lookups:
    """What the lookups of one acceptance batch look for."""

    pairs: set[tuple[str, str]]  # (app, uid): the apps, installs, devices and preferences
    key_hashes: set[str]  # the callers' app secrets (SHA-256)
    keys: set[tuple[str, str]]  # (app, idempotency key)
    digests: set[str]  # dedupe hashes, repeats if made since dedupe_since
    dedupe_since: float
    windows: set[tuple[str, str, str]]  # (kind, app, uid), counted since window_since
    window_since: float


@dataclass
class Found:
    """What the lookups of one acceptance batch found."""

    owners: dict[str, str | None]  # key hash -> its app (None: revoked)
    apps: dict[str, Any]  # app id -> row (.name, .direct_limit_per_hour)
    installed: set[tuple[str, str]]  # the batch's (app, uid) pairs that are installed
    devices: dict[str, dict[str, str]]  # uid -> device id -> platform
    users: set[str]  # of the users of pairs not installed, those that exist
    # The installed pairs' preferences: (app, uid) -> the user's settings for the app, and
    # uid -> the user's own settings (None: none set).
    app_preferences: dict[tuple[str, str], dict[str, Any] | None]
    user_preferences: dict[str, dict[str, Any] | None]
    by_key: dict[tuple[str, str], str]  # (app, idempotency key) -> notification id
    recent: dict[str, str]  # dedupe hash -> notification id, within the duplicate window
    # (kind, app, uid) -> used, and the end of the oldest bucket counted (see bucket_end)
    windows: dict[tuple[str, str, str], tuple[int, float]]


def find_for_acceptance(conn: Connection, lookups: Lookups, *, lock_rows: bool) -> Found:
    """A fixed handful of queries for a whole batch: keys, apps, installs and devices, users,
    repeats and the hourly windows. With ``lock_rows`` (PostgreSQL) the install rows are
    locked: sends to one (app, user) take turns, so the hourly count holds across processes;
    there the lookups are two statements (:func:`_find_locked`)."""
    if lock_rows:
        return _find_locked(conn, lookups)
    pairs, key_hashes, keys = lookups.pairs, lookups.key_hashes, lookups.keys
    app_ids = list({a for a, _ in pairs})
    uids = list({u for _, u in pairs})
    owners: dict[str, str | None] = {}
    apps: dict[str, Any] = {}
    for r in _APPS.rows(conn, {"ids": app_ids, "hashes": list(key_hashes)}):
        apps[r.id] = r
        if r.key_hash is not None:
            owners[r.key_hash] = r.id if r.revoked_at is None else None
    if key_hashes - owners.keys():
        for key in _KEYS.rows(conn, {"hashes": list(key_hashes - owners.keys())}):
            owners[key.key_hash] = key.app_id if key.revoked_at is None else None
    installed: set[tuple[str, str]] = set()
    devices: dict[str, dict[str, str]] = {}
    app_preferences: dict[tuple[str, str], dict[str, Any] | None] = {}
    user_preferences: dict[str, dict[str, Any] | None] = {}
    for target in _TARGETS.rows(conn, {"app_ids": app_ids, "uids": uids}):
        installed.add((target.app_id, target.uid))
        app_preferences[(target.app_id, target.uid)] = target.app_preferences
        user_preferences[target.uid] = target.user_preferences
        if target.device_id is not None:
            devices.setdefault(target.uid, {})[target.device_id] = target.platform
    installed &= pairs
    # An install implies its user (a foreign key): users are looked up only to tell an unknown
    # user from a missing install.
    unknown = {uid for _, uid in pairs - installed}
    users = {r.uid for r in _USERS.rows(conn, {"uids": list(unknown)})} if unknown else set()
    by_key: dict[tuple[str, str], str] = {}
    if keys:
        params = {"app_ids": list({a for a, _ in keys}), "keys": list({k for _, k in keys})}
        by_key = {
            (r.app_id, r.idempotency_key): r.id for r in _BY_IDEMPOTENCY_KEY.rows(conn, params)
        }
    recent = _RECENT.rows(conn, {"digests": list(lookups.digests), "since": lookups.dedupe_since})
    windows = lookups.windows
    counts = _windows(conn, windows, lookups.window_since) if windows else {}
    recent_ids = {r.dedupe_hash: r.id for r in recent}
    return Found(
        owners,
        apps,
        installed,
        devices,
        users,
        app_preferences,
        user_preferences,
        by_key,
        recent_ids,
        counts,
    )


def _find_locked(conn: Connection, lookups: Lookups) -> Found:
    """PostgreSQL: :func:`find_for_acceptance` in two round trips (``_LOCK_SQL``, then
    :func:`_after_lock_sql`)."""
    pairs, keys, windows = lookups.pairs, lookups.keys, lookups.windows
    lock = (list({a for a, _ in pairs}), list({u for _, u in pairs}), list(lookups.key_hashes))
    found = Found({}, {}, set(), {}, set(), {}, {}, {}, {}, {})
    rows = conn.exec_driver_sql(_LOCK_SQL, lock).all()
    for part, a, b, device_id, platform, limit, revoked_at, app_pref, user_pref in rows:
        if part == "t":
            found.installed.add((a, b))
            found.app_preferences[(a, b)] = _json(app_pref)
            found.user_preferences[b] = _json(user_pref)
            if device_id is not None:
                found.devices.setdefault(b, {})[device_id] = platform
        elif part == "a":
            found.apps[a] = AppFound(a, b, limit)
        else:
            found.owners[a] = b if revoked_at is None else None
    found.installed &= pairs
    unknown = {uid for _, uid in pairs - found.installed}
    parts = "r"
    params: list[Any] = [list(lookups.digests), lookups.dedupe_since]
    if keys:
        parts += "i"
        params += [list({a for a, _ in keys}), list({k for _, k in keys})]
    if unknown:
        parts += "u"
        params.append(list(unknown))
    if windows:
        parts += "w"
        params += [
            list({u for _, _, u in windows}),
            list({a for _, a, _ in windows}),
            list({k for k, _, _ in windows}),
            bucket_of(lookups.window_since),
        ]
    for part, a, b, c, used, first in conn.exec_driver_sql(_after_lock_sql(parts), tuple(params)):
        if part == "r":
            found.recent[a] = b
        elif part == "i":
            if (a, b) in keys:
                found.by_key[(a, b)] = c
        elif part == "u":
            found.users.add(a)
        elif (c, b, a) in windows:
            found.windows[(c, b, a)] = (int(used), bucket_end(int(first) * BUCKET_S))
    return found


def insert_accepted(
    conn: Connection,
    notifications: list[dict[str, Any]],
    deliveries: list[dict[str, Any]],
    chats: list[dict[str, Any]],
    counted: list[dict[str, Any]],
) -> None:
    """The rows of accepted notifications: each with its deliveries and its app chat line, and
    what they add to their windows' buckets (``uid, app_id, kind, minute, count``, one row per
    bucket, in a fixed order so that concurrent batches lock buckets alike)."""
    if conn.dialect.name == "postgresql":
        tables = (Notification, Delivery, ChatMessage, WindowBucket)
        parts = tuple(
            (model, rows)
            for model, rows in zip(tables, (notifications, deliveries, chats, counted))
            if rows
        )
        if parts:
            sql, columns = _insert_all_sql(tuple((model, tuple(rows[0])) for model, rows in parts))
            values = [
                [row[c] for row in rows] for (_, rows), names in zip(parts, columns) for c in names
            ]
            conn.exec_driver_sql(sql, tuple(values))
        return
    if notifications:
        for model, rows in (
            (Notification, notifications),
            (Delivery, deliveries),
            (ChatMessage, chats),
        ):
            sql, names = _insert_sql(conn.dialect, model, tuple(rows[0]))
            conn.exec_driver_sql(sql, [tuple(row[c] for c in names) for row in rows])
    _COUNT_SQLITE.run_many(conn, counted)


@lru_cache(maxsize=32)
def _insert_sql(
    dialect: Dialect, model: type[Base], columns: tuple[str, ...]
) -> tuple[str, tuple[str, ...]]:
    """SQLite: an insert run once per row (executemany) with the rows passed to the driver as
    they are: SQLAlchemy's per-row parameter processing is a measurable part of a direct
    notification. JSON columns must already be serialized."""
    compiled = sa.insert(model).compile(dialect=dialect, column_keys=list(columns))
    return compiled.string, tuple(compiled.positiontup or columns)


@lru_cache(maxsize=32)
def _insert_all_sql(
    parts: tuple[tuple[type[Base], tuple[str, ...]], ...],
) -> tuple[str, tuple[tuple[str, ...], ...]]:
    """PostgreSQL: the inserts of all ``(table, columns)`` as one statement (the first ones as
    data-modifying ``WITH`` parts: one round trip, where each insert was one), each table's rows
    as one array per column, ``INSERT ... SELECT FROM unnest($1::type[], ...)`` in order; the
    window buckets as an upsert. The driver's executemany ran an insert once per row, each
    costing PostgreSQL 10-30 us (its log) per notification, delivery and chat line. JSON
    columns travel as text (already serialized) and are cast. A foreign key's check runs at
    the statement's end, so deliveries may go in with their notifications."""
    dialect = postgresql.asyncpg.dialect()  # type: ignore[attr-defined]
    quote = dialect.identifier_preparer.quote
    inserts, params = [], 0
    for model, columns in parts:
        table = Base.metadata.tables[model.__tablename__]
        names = [quote(name) for name in columns]
        arrays, selected = [], []
        for name, quoted in zip(columns, names):
            params += 1
            column_type = table.c[name].type.compile(dialect=dialect)
            is_json = isinstance(table.c[name].type, sa.JSON)
            arrays.append(f"${params}::{'TEXT' if is_json else column_type}[]")
            selected.append(f"r.{quoted}::{column_type}" if is_json else f"r.{quoted}")
        sql = (
            f"INSERT INTO {table.name} ({', '.join(names)}) SELECT {', '.join(selected)} "
            f"FROM unnest({', '.join(arrays)}) AS r({', '.join(names)})"
        )
        if model is WindowBucket:
            keys = ", ".join(quote(c.name) for c in table.primary_key)
            sql += (
                f" ON CONFLICT ({keys}) DO UPDATE SET count = {table.name}.count + excluded.count"
            )
        inserts.append(sql)
    *first, last = inserts
    with_parts = ", ".join(f"i{n} AS ({sql})" for n, sql in enumerate(first))
    return (f"WITH {with_parts} {last}" if first else last), tuple(c for _, c in parts)


# The buckets' upsert on SQLite: a new bucket, or its count plus the batch's, run once per
# bucket on the driver (executemany). PostgreSQL's is part of :func:`_insert_all_sql`.
_BUCKET_COLUMNS = ("uid", "app_id", "kind", "minute", "count")
_UPSERT_SQLITE = sqlite.insert(WindowBucket).values({c: sa.bindparam(c) for c in _BUCKET_COLUMNS})
_COUNT_SQLITE = Statement(
    _UPSERT_SQLITE.on_conflict_do_update(
        index_elements=list(WindowBucket.__table__.primary_key),
        set_={"count": WindowBucket.count + _UPSERT_SQLITE.excluded.count},
    )
)


def device_counts(conn: Connection, notification_ids: Iterable[str]) -> dict[str, int]:
    """How many devices each notification was sent to (its deliveries other than the inbox)."""
    rows = conn.execute(
        sa.select(Delivery.notification_id, sa.func.count())
        .where(Delivery.notification_id.in_(list(notification_ids)), Delivery.provider != "inbox")
        .group_by(Delivery.notification_id)
    )
    return {nid: int(n) for nid, n in rows}


def direct_window(
    conn: Connection, app_id: str | None, uid: str | None, since: float
) -> tuple[int | None, tuple[int, float] | None]:
    """The app's own hourly limit (None: the default) and, if the pair sent any since ``since``,
    how many direct notifications and the end of the oldest bucket counted."""
    per_app = None
    if app_id:
        per_app = conn.scalar(sa.select(App.direct_limit_per_hour).where(App.id == app_id))
    if not app_id or not uid:
        return per_app, None
    return per_app, _windows(conn, {("direct", app_id, uid)}, since).get(("direct", app_id, uid))


def prune_windows(conn: Connection, older_than: float, limit: int) -> int:
    """Delete up to ``limit`` of the buckets that ended before ``older_than``; returns how
    many. The keys are read first and deleted one by one: each a primary-key search."""
    old = conn.execute(
        sa.select(WindowBucket.uid, WindowBucket.app_id, WindowBucket.kind, WindowBucket.minute)
        .where(WindowBucket.minute < bucket_of(older_than))
        .order_by(WindowBucket.minute)
        .limit(limit)
    ).all()
    if old:
        conn.execute(
            sa.delete(WindowBucket).where(
                WindowBucket.uid == sa.bindparam("u"),
                WindowBucket.app_id == sa.bindparam("a"),
                WindowBucket.kind == sa.bindparam("k"),
                WindowBucket.minute == sa.bindparam("m"),
            ),
            [{"u": u, "a": a, "k": k, "m": m} for u, a, k, m in old],
        )
    return len(old)


# Reading back.


def list_notifications(conn: Connection, uid: str, limit: int, cursor: str | None) -> list[Any]:
    """A user's notifications, newest first, older than ``cursor`` (an id) if given."""
    q = sa.select(Notification).where(Notification.uid == uid)
    if cursor:
        q = q.where(Notification.id < cursor)
    return list(conn.execute(q.order_by(Notification.id.desc()).limit(limit)).all())


def get_notification(conn: Connection, notification_id: str) -> Any:
    """The notification's row, or None."""
    return conn.execute(sa.select(Notification).where(Notification.id == notification_id)).first()


def deliveries_of(conn: Connection, notification_id: str) -> list[Any]:
    q = sa.select(Delivery).where(Delivery.notification_id == notification_id).order_by(Delivery.id)
    return list(conn.execute(q).all())


def mark_read(conn: Connection, uid: str, notification_id: str, now: float) -> bool:
    """Mark a user's notification read (the first time counts); False if there is none."""
    result = conn.execute(
        sa.update(Notification)
        .where(Notification.id == notification_id, Notification.uid == uid)
        .values(read_at=sa.func.coalesce(Notification.read_at, now))
    )
    return bool(result.rowcount)


def prune_chunk(conn: Connection, older_than: float, limit: int) -> int:
    """Delete up to ``limit`` of the oldest notifications made before ``older_than``, with their
    deliveries; returns how many."""
    floor = id_floor("n", older_than)  # ids sort by time: a range on the primary key
    q = sa.select(Notification.id).where(Notification.id < floor).order_by(Notification.id)
    ids = list(conn.execute(q.limit(limit)).scalars())
    if ids:
        conn.execute(sa.delete(Delivery).where(Delivery.notification_id.in_(ids)))
        conn.execute(sa.delete(Notification).where(Notification.id.in_(ids)))
    return len(ids)


# The delivery queue. A claim sets a lease; a row whose lease ran out (its worker died) is due
# again. Results are recorded only by the worker that still holds the claim.

DUE_STATES = ("queued", "retrying")  # what the claim takes once due
# A push held back for quiet hours or a digest waits as ``held`` until its window ends; only
# :func:`claim_held` takes it, a device's whole group at once, so that it goes out as one summary.
HELD_STATE = "held"
WAITING_STATES = (*DUE_STATES, HELD_STATE)  # not sent yet and held by no worker
# Parameters: t_now, t_lease (lease end), worker, pick (how many), ids (expanding).
_DUE_NOW = Delivery.next_attempt_at <= sa.bindparam("t_now")
_LAPSED_NOW = Delivery.lease_until < sa.bindparam("t_now")


def _in(state: str) -> Any:
    """``state = '<state>'`` with the state written as a literal. A partial index
    (ix_deliveries_held) is used only then; and where a bound parameter could decide whether it
    applies, SQLite prepares the statement again at every run (a claim of one row took 200 us
    instead of 45)."""
    return Delivery.state == sa.literal_column(f"'{state}'")


_TAKE = sa.update(Delivery).values(
    state="sending",
    lease_until=sa.bindparam("t_lease"),
    claimed_by=sa.bindparam("worker"),
    updated_at=sa.bindparam("t_now"),
)


def _first(state: str, condition: Any) -> Any:
    """The first ``pick`` rows of one state, read in the order of ix_deliveries_due: one
    equality on the state, so the scan stops after ``pick``. With the states OR-ed (or as
    ``IN``) in one query, each claim read and sorted every due row: 80 ms per claim with 20,000
    queued on PostgreSQL; on SQLite its cost grew with the backlog too."""
    return (
        sa.select(Delivery.id, Delivery.next_attempt_at)
        .where(_in(state), condition)
        .order_by(Delivery.next_attempt_at)
        .limit(sa.bindparam("pick"))
    )


# Each due state, and claims whose lease ran out.
_KINDS = [(state, _DUE_NOW) for state in DUE_STATES] + [("sending", _LAPSED_NOW)]
# PostgreSQL: each kind's first rows locked, skipping rows that other claims hold. A locking CTE
# runs once (as ``IN (subquery)`` PostgreSQL may run it again for every row and claim every
# due row).
_DUE = [_first(s, c).with_for_update(skip_locked=True).cte(f"due_{s}") for s, c in _KINDS]
_DUE_ALL = sa.union_all(*(sa.select(due.c.id, due.c.next_attempt_at) for due in _DUE)).subquery()
_PICKED = (
    sa.select(_DUE_ALL.c.id)
    .order_by(_DUE_ALL.c.next_attempt_at)
    .limit(sa.bindparam("pick"))
    .cte("picked")
)
# SQLite: the first ``pick`` of each kind, then the first ``pick`` of them all. No second check
# is needed in the UPDATE: BEGIN IMMEDIATE holds the write lock from the start.
_CANDIDATES = sa.union_all(*(sa.select(_first(s, c).subquery()) for s, c in _KINDS)).subquery()
_PICK_SQLITE = (
    sa.select(_CANDIDATES.c.id).order_by(_CANDIDATES.c.next_attempt_at).limit(sa.bindparam("pick"))
)
_CLAIM_SQLITE = Statement(
    _TAKE.where(Delivery.id.in_(_PICK_SQLITE.scalar_subquery())).returning(Delivery.id)
)


# What sending needs, of the claimed deliveries (``deliveries``, or PostgreSQL's claim CTE).
def _sending(claimed: Any) -> Any:
    return (
        sa.select(
            claimed.c.id,
            claimed.c.provider,
            claimed.c.device_id,
            claimed.c.attempts,
            claimed.c.created_at,
            Notification.id.label("notification_id"),
            Notification.app_id,
            Notification.uid,
            Notification.title,
            Notification.body,
            Notification.data,
            Notification.collapse_key,
            Notification.created_at.label("notification_created_at"),
            Notification.priority,
            Notification.expires_at,
            Notification.send_at,
            Notification.hold,
            Device.platform,
            Device.token,
            Device.subscription,
        )
        .join_from(claimed, Notification, Notification.id == claimed.c.notification_id)
        .outerjoin(Device, Device.id == claimed.c.device_id)
    )


_CLAIMED = Statement(
    _sending(Delivery.__table__).where(Delivery.id.in_(sa.bindparam("ids", expanding=True)))
)
# PostgreSQL: the claim and what sending needs in one statement, a single round trip run on its
# own (autocommit): the transaction around the two statements took four.
_TAKEN = (
    _TAKE.where(Delivery.id == _PICKED.c.id)
    .returning(
        Delivery.id,
        Delivery.notification_id,
        Delivery.provider,
        Delivery.device_id,
        Delivery.attempts,
        Delivery.created_at,
    )
    .add_cte(_PICKED)
    .cte("taken")
)
_CLAIM_POSTGRES = _sending(_TAKEN)
# A claim still held: rows are found by id (the primary key) only. With ``state = 'sending'``
# SQLite read every row in flight through ix_deliveries_due instead (thousands while a backlog
# drains or held pushes are released: 1-2 ms per summary in bench/holds.py); ``state || ''``
# is no column it can search.
_HELD = sa.and_(
    Delivery.claimed_by == sa.bindparam("worker"), Delivery.state.concat("") == "sending"
)
_DONE = sa.update(Delivery).values(
    state="delivered",
    attempts=Delivery.attempts + 1,
    lease_until=None,
    claimed_by=None,
    updated_at=sa.bindparam("t_now"),
    delivered_at=sa.bindparam("t_now"),
    last_error="",
)
_DELIVERED = Statement(
    _DONE.where(Delivery.id.in_(sa.bindparam("ids", expanding=True)), _HELD).returning(Delivery.id)
)
# PostgreSQL: one array parameter, so one SQL text (prepared once per connection) for any number
# of ids; an expanding IN list is a new statement to prepare for every length.
_DELIVERED_POSTGRES = _DONE.where(
    Delivery.id == sa.any_(sa.bindparam("ids", type_=sa.ARRAY(sa.String))), _HELD
).returning(Delivery.id)


def claim(conn: Connection, worker: str, limit: int, now: float, lease_s: float) -> list[Any]:
    """SQLite: claim up to ``limit`` due deliveries for ``worker``; the rows of what sending
    needs (PostgreSQL: :func:`claim_now`)."""
    params = {"t_now": now, "t_lease": now + lease_s, "worker": worker, "pick": limit}
    claimed = [r.id for r in _CLAIM_SQLITE.rows(conn, params)]
    return _CLAIMED.rows(conn, {"ids": claimed}) if claimed else []


# Held pushes: the devices of the first ``pick`` due held rows, then every due held row of those
# devices (ix_deliveries_held; a partial index is used only if the query names its state as a
# literal, not as a parameter: use IS_HELD wherever a query should find held rows by it).
IS_HELD = _in(HELD_STATE)
_HELD_DEVICES = (
    sa.select(Delivery.device_id)
    .where(IS_HELD, _DUE_NOW)
    .order_by(Delivery.next_attempt_at)
    .limit(sa.bindparam("pick"))
)
_CLAIM_HELD = Statement(
    _TAKE.where(
        IS_HELD, _DUE_NOW, Delivery.device_id.in_(_HELD_DEVICES.scalar_subquery())
    ).returning(Delivery.id)
)
HELD_LOCK = 0x6E756467  # PostgreSQL advisory lock key ("nudg"): one claimer of held pushes


def claim_held(conn: Connection, worker: str, limit: int, now: float, lease_s: float) -> list[Any]:
    """Claim the due held pushes of the devices of the first ``limit`` due held rows, every
    due held row of each of those devices, so that two claims never split a device's group
    (one summary push per device). On PostgreSQL one claimer at a time (a transaction-level
    advisory lock; another finds nothing now and tries again later); SQLite's single writer does
    that already. The rows of what sending needs, as :func:`claim`."""
    postgres = conn.dialect.name == "postgresql"
    if postgres and not conn.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(HELD_LOCK))):
        return []
    params = {"t_now": now, "t_lease": now + lease_s, "worker": worker, "pick": limit}
    claimed = [r.id for r in _CLAIM_HELD.rows(conn, params)]
    return _CLAIMED.rows(conn, {"ids": claimed}) if claimed else []


@lru_cache(maxsize=8)
def _row_type(keys: tuple[str, ...]) -> Callable[..., Any]:
    return namedtuple("Row", keys, rename=True)  # type: ignore[misc]


async def _alone(db: Database, statement: Any, params: dict[str, Any]) -> list[Any]:
    """PostgreSQL: one statement on its own (autocommit, on ``Database.keyed_engine``): one
    round trip, no BEGIN or COMMIT, in one trip into the synchronous world."""
    assert db.keyed_engine is not None
    async with db.keyed_engine.connect() as conn:
        return await conn.run_sync(_autocommit_rows, statement, params)


def _autocommit_rows(conn: Connection, statement: Any, params: dict[str, Any]) -> list[Any]:
    """Rows as named tuples: a SQLAlchemy row's attribute costs ~0.5 us, a named tuple's
    ~0.03 us, and a claimed job reads about 20."""
    result = conn.execution_options(isolation_level="AUTOCOMMIT").execute(statement, params)
    row = _row_type(tuple(result.keys()))
    return [row(*r) for r in result]


async def claim_now(db: Database, worker: str, limit: int, now: float, lease_s: float) -> list[Any]:
    """PostgreSQL: :func:`claim` as one statement on its own (autocommit)."""
    params = {"t_now": now, "t_lease": now + lease_s, "worker": worker, "pick": limit}
    return await _alone(db, _CLAIM_POSTGRES, params)


def record_delivered(conn: Connection, worker: str, ids: list[str], now: float) -> list[str]:
    """Mark delivered those of ``ids`` that ``worker`` still holds; returns them."""
    done: list[str] = []
    for start in range(0, len(ids), 500):
        params = {"ids": ids[start : start + 500], "worker": worker, "t_now": now}
        done += [r.id for r in _DELIVERED.rows(conn, params)]
    return done


async def record_delivered_now(db: Database, worker: str, ids: list[str], now: float) -> list[str]:
    """PostgreSQL: :func:`record_delivered` as one statement on its own (autocommit), a single
    round trip where a transaction took up to four (docs/delivery.md, "kill -9")."""
    params = {"ids": ids, "worker": worker, "t_now": now}
    return [r.id for r in await _alone(db, _DELIVERED_POSTGRES, params)]


def record_result(conn: Connection, worker: str, delivery_id: str, values: dict[str, Any]) -> bool:
    """Write an outcome other than delivered; False if ``worker`` no longer holds the claim."""
    held = conn.execute(
        sa.update(Delivery).where(Delivery.id == delivery_id, _HELD).values(**values),
        {"worker": worker},
    )
    return bool(held.rowcount)


_MERGED = Statement(
    sa.update(Delivery)
    .values(
        state="merged",
        lease_until=None,
        claimed_by=None,
        updated_at=sa.bindparam("t_now"),
        delivered_at=sa.bindparam("t_now"),
        last_error=sa.bindparam("reason"),
    )
    .where(Delivery.id.in_(sa.bindparam("ids", expanding=True)), _HELD)
    .returning(Delivery.id)
)


def record_merged(
    conn: Connection, worker: str, ids: list[str], reason: str, now: float
) -> list[str]:
    """Mark ``merged`` (their content went out inside one summary push, which ``reason``
    names) those of ``ids`` that ``worker`` still holds; returns them."""
    params = {"ids": ids, "worker": worker, "t_now": now, "reason": reason}
    return [r.id for r in _MERGED.rows(conn, params)]


# The earliest next attempt of each waiting state: one probe of ix_deliveries_due each.
_NEXT_DUE = Statement(
    sa.select(
        *(
            sa.select(sa.func.min(Delivery.next_attempt_at)).where(_in(state)).scalar_subquery()
            for state in WAITING_STATES
        )
    )
)


def next_due(conn: Connection) -> float | None:
    """When the next waiting delivery comes due (a held push whose window ends, a scheduled
    send, a retry), None if none waits; may be in the past if one is due now."""
    [row] = _NEXT_DUE.rows(conn)
    times = [t for t in row if t is not None]
    return min(times) if times else None


def remove_device(conn: Connection, device_id: str, now: float) -> None:
    """A dead token: delete the device and close its other pending deliveries."""
    conn.execute(sa.delete(Device).where(Device.id == device_id))
    conn.execute(
        sa.update(Delivery)
        .where(Delivery.device_id == device_id, Delivery.state.in_(WAITING_STATES))
        .values(state="token-removed", last_error="device token is no longer valid", updated_at=now)
    )


def release(conn: Connection, worker: str, now: float) -> int:
    """Give back every claim of ``worker``; returns how many."""
    result = conn.execute(
        sa.update(Delivery)
        .where(Delivery.claimed_by == worker, Delivery.state == "sending")
        .values(state="queued", lease_until=None, claimed_by=None, updated_at=now)
    )
    return int(result.rowcount or 0)


@lru_cache(maxsize=2)
def _hit_statement(dialect: str) -> Statement:
    """One upsert: a new window when the last one ended, else one more in it; returns both."""
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(RateCounter).values(
        key=sa.bindparam("key"), window_end=sa.bindparam("window_end"), count=1
    )
    ended = RateCounter.window_end <= sa.bindparam("now")
    return Statement(
        stmt.on_conflict_do_update(
            index_elements=[RateCounter.key],
            set_={
                "count": sa.case((ended, 1), else_=RateCounter.count + 1),
                "window_end": sa.case(
                    (ended, stmt.excluded.window_end), else_=RateCounter.window_end
                ),
            },
        ).returning(RateCounter.count, RateCounter.window_end)
    )


def hit_counter(conn: Connection, key: str, now: float, window_s: float) -> tuple[int, float]:
    """Count one request under ``key`` in its fixed window; the count, and the seconds left."""
    params = {"key": key, "window_end": now + window_s, "now": now}
    ((count, window_end),) = _hit_statement(conn.dialect.name).rows(conn, params)
    return int(count), max(window_end - now, 0.0)


def cancel_pending(conn: Connection, notification_id: str, now: float) -> int:
    """Cancel a notification's deliveries that wait (queued, retrying or held: scheduled ones
    too); one a worker holds is being sent and is left to finish. Returns how many."""
    result = conn.execute(
        sa.update(Delivery)
        .where(Delivery.notification_id == notification_id, Delivery.state.in_(WAITING_STATES))
        .values(state="cancelled", last_error="cancelled by the app", updated_at=now)
    )
    return int(result.rowcount or 0)
