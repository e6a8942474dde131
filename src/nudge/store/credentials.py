"""SQL of the credentials: whose app key or user token a stored hash is."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Connection, bindparam, select

from nudge.store.fast import Statement
from nudge.store.models import AppKey, Install, User

_TOKEN_OWNERS = Statement(
    select(User.token_hash, User.uid).where(
        User.token_hash.in_(bindparam("hashes", expanding=True))
    )
)


def app_of_key(conn: Connection, key_hash: str) -> str | None:
    """The app whose live key this is (None: unknown or revoked)."""
    row = conn.execute(
        select(AppKey.app_id, AppKey.revoked_at).where(AppKey.key_hash == key_hash)
    ).first()
    return None if row is None or row.revoked_at is not None else str(row.app_id)


def user_of_token(conn: Connection, token_hash: str) -> tuple[str, str] | None:
    """The uid and name of the user whose token this is (None: nobody's)."""
    row = conn.execute(select(User.uid, User.name).where(User.token_hash == token_hash)).first()
    return None if row is None else (row.uid, row.name)


def token_owners(conn: Connection, token_hashes: Collection[str]) -> dict[str, str]:
    """User token hash -> uid, for the hashes that belong to a user (one query)."""
    return {r.token_hash: r.uid for r in _TOKEN_OWNERS.rows(conn, {"hashes": list(token_hashes)})}


def is_installed(conn: Connection, uid: str, app_id: str) -> bool:
    """Whether the user enabled the app (what lets it use the integration API for them)."""
    found = conn.execute(
        select(Install.app_id).where(Install.uid == uid, Install.app_id == app_id)
    ).first()
    return found is not None
