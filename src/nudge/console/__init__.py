"""The web console: a live notification feed, a conversation simulator and the trace view.

The pages are plain HTML, CSS and JavaScript in ``static/`` (no build step), served by
``nudge.api.console``. They call the public API with the token given at login; the helpers here
answer what the API has no call for: who a token belongs to, the list of users (admin), and what
the platform knows of a user (facts, with the app that imported each, and latest conversations).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from nudge.core.apps import app_for_secret, is_admin_token, parse_bearer
from nudge.core.users import user_token_hash
from nudge.errors import Unauthorized
from nudge.ids import APP_SECRET_RE
from nudge.store.models import Conversation, User, UserFact

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


def static_file(name: str) -> Path | None:
    """A file of ``static/`` by its bare name (no paths, known types only)."""
    path = STATIC / name
    if "/" in name or "\\" in name or path.suffix not in MEDIA_TYPES or not path.is_file():
        return None
    return path


async def whoami(
    conn: AsyncConnection, authorization: str | None, admin_token: str
) -> dict[str, Any]:
    """``{"role": "admin"}``, ``{"role": "user", "uid"}`` or ``{"role": "app", "app_id"}``."""
    token = parse_bearer(authorization, "admin, user or app token")
    if is_admin_token(token, admin_token):
        return {"role": "admin"}
    if APP_SECRET_RE.match(token):
        return {"role": "app", "app_id": await app_for_secret(conn, authorization)}
    row = (
        await conn.execute(
            select(User.uid, User.name).where(User.token_hash == user_token_hash(token))
        )
    ).first()
    if row is None:
        raise Unauthorized("unknown token: use the admin token, a user token or an app secret")
    return {"role": "user", "uid": row.uid, "name": row.name}


async def list_users(conn: AsyncConnection, limit: int) -> list[dict[str, Any]]:
    """The newest users first."""
    rows = await conn.execute(
        select(User.uid, User.name, User.created_at).order_by(User.created_at.desc()).limit(limit)
    )
    return [{"uid": r.uid, "name": r.name, "created_at": r.created_at} for r in rows]


async def user_knowledge(conn: AsyncConnection, uid: str, limit: int) -> dict[str, Any]:
    """The user's newest facts and conversations (imported ones name their app)."""
    facts = await conn.execute(
        select(UserFact.text, UserFact.app_id, UserFact.created_at)
        .where(UserFact.uid == uid)
        .order_by(UserFact.id.desc())
        .limit(limit)
    )
    conversations = await conn.execute(
        select(
            Conversation.id,
            Conversation.title,
            Conversation.source,
            Conversation.app_id,
            Conversation.status,
            Conversation.started_at,
        )
        .where(Conversation.uid == uid)
        .order_by(Conversation.created_at.desc())
        .limit(limit)
    )
    return {
        "facts": [r._asdict() for r in facts],
        "conversations": [r._asdict() for r in conversations],
    }
