"""SQL of the accounts: apps, app keys, users, facts, installs, devices and the app chat."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from nudge.store.fast import Statement
from nudge.store.models import (
    App,
    AppKey,
    ChatMessage,
    Conversation,
    Device,
    Install,
    User,
    UserFact,
)

_TABLES = {"apps": App, "app_keys": AppKey, "devices": Device}


def add(conn: Connection, table: str, **values: Any) -> None:
    """Insert one row of ``apps``, ``app_keys`` or ``devices``."""
    conn.execute(insert(_TABLES[table]).values(**values))


def apps(conn: Connection, app_id: str | None = None) -> Sequence[Row[Any]]:
    """Every app, or the one ``app_id`` (none if it does not exist)."""
    query = select(App) if app_id is None else select(App).where(App.id == app_id)
    return conn.execute(query.order_by(App.id)).all()


def keys(conn: Connection, app_id: str) -> Sequence[Row[Any]]:
    return conn.execute(select(AppKey).where(AppKey.app_id == app_id).order_by(AppKey.id)).all()


def revoke_key(conn: Connection, app_id: str, key_id: str, now: float) -> bool:
    """False if the app has no such key that is still live."""
    result = conn.execute(
        update(AppKey)
        .where(AppKey.app_id == app_id, AppKey.id == key_id, AppKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return bool(result.rowcount)


def user(conn: Connection, uid: str) -> Any:
    """The user's uid and name, or None."""
    return conn.execute(select(User.uid, User.name).where(User.uid == uid)).first()


def users(conn: Connection, limit: int) -> list[dict[str, Any]]:
    """The newest users first."""
    rows = conn.execute(
        select(User.uid, User.name, User.created_at).order_by(User.created_at.desc()).limit(limit)
    )
    return [r._asdict() for r in rows]


def knowledge(conn: Connection, uid: str, limit: int) -> dict[str, Any]:
    """The user's newest facts and conversations, for the console."""
    c = Conversation
    conversations = conn.execute(
        select(c.id, c.title, c.source, c.app_id, c.status, c.started_at)
        .where(c.uid == uid)
        .order_by(c.created_at.desc())
        .limit(limit)
    )
    return {
        "facts": [r._asdict() for r in facts(conn, uid, limit=limit)],
        "conversations": [r._asdict() for r in conversations],
    }


def insert_user(conn: Connection, **values: Any) -> bool:
    """False (and nothing written) if the uid is taken: in a savepoint, so that the transaction,
    shared with other writes, goes on."""
    try:
        with conn.begin_nested():
            conn.execute(insert(User).values(**values))
    except IntegrityError:
        return False
    return True


def insert_facts(conn: Connection, rows: list[dict[str, Any]]) -> list[Row[Any]]:
    """``rows`` of ``uid``, ``text``, ``created_at`` (and ``app_id``, ``tags``); returns them."""
    stored = insert(UserFact).returning(UserFact, sort_by_parameter_order=True)
    return list(conn.execute(stored, rows))


def facts(
    conn: Connection, uid: str, *, limit: int | None = None, offset: int = 0
) -> list[Row[Any]]:
    """Oldest first; newest first when ``limit``ed."""
    query = select(UserFact).where(UserFact.uid == uid)
    if limit is None:
        return list(conn.execute(query.order_by(UserFact.id)))
    return list(conn.execute(query.order_by(UserFact.id.desc()).limit(limit).offset(offset)))


def fact_texts_among(conn: Connection, uid: str, texts: set[str]) -> set[str]:
    """Which of ``texts`` the user already has as facts."""
    found = conn.scalars(select(UserFact.text).where(UserFact.uid == uid, UserFact.text.in_(texts)))
    return set(found)


def replace_install(conn: Connection, uid: str, app_id: str, scopes: list[str], now: float) -> None:
    conn.execute(delete(Install).where(Install.uid == uid, Install.app_id == app_id))
    conn.execute(insert(Install).values(uid=uid, app_id=app_id, scopes=scopes, installed_at=now))


def delete_install(conn: Connection, uid: str, app_id: str) -> bool:
    result = conn.execute(delete(Install).where(Install.uid == uid, Install.app_id == app_id))
    return bool(result.rowcount)


def installs(conn: Connection, uid: str) -> list[dict[str, Any]]:
    """The user's installs: ``app_id``, ``scopes``, ``installed_at``."""
    query = select(Install.app_id, Install.scopes, Install.installed_at).where(Install.uid == uid)
    return [r._asdict() for r in conn.execute(query.order_by(Install.app_id))]


def device_id(conn: Connection, uid: str, platform: str, token: str) -> str | None:
    query = select(Device.id).where(Device.uid == uid, Device.platform == platform)
    return conn.scalar(query.where(Device.token == token))


def devices(conn: Connection, uid: str) -> Sequence[Row[Any]]:
    return conn.execute(select(Device).where(Device.uid == uid).order_by(Device.id)).all()


def delete_device(conn: Connection, uid: str, device_id: str) -> bool:
    result = conn.execute(delete(Device).where(Device.uid == uid, Device.id == device_id))
    return bool(result.rowcount)


def chat_messages(conn: Connection, uid: str, app_id: str, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` messages between a user and an app, oldest first."""
    m = ChatMessage
    rows = conn.execute(
        select(m.sender, m.text, m.notification_id, m.created_at)
        .where(m.uid == uid, m.app_id == app_id)
        .order_by(m.id.desc())
        .limit(limit)
    ).all()
    return [r._asdict() for r in reversed(rows)]


_INSTALL_SCOPES = Statement(
    select(Install.scopes).where(
        Install.uid == bindparam("uid"), Install.app_id == bindparam("app_id")
    )
)


def install_scopes(conn: Connection, uid: str, app_id: str) -> tuple[str, ...] | None:
    """The scopes a user granted an app, None when it is not installed (on the proactive path)."""
    rows = _INSTALL_SCOPES.rows(conn, {"uid": uid, "app_id": app_id})
    return tuple(rows[0].scopes) if rows else None
