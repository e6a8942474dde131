"""Who may call the integration API, answered as Omi answers (docs/omi.md gives the order).

The app is looked up before its key so that an unknown app is a 404 (in Omi the key check fails
first, which makes its 404 unreachable)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Protocol

from sqlalchemy import Connection

from nudge import auth
from nudge.config import Settings
from nudge.core.apps import AppRecord, get_app
from nudge.core.notifications import RateLimit
from nudge.errors import Forbidden, Invalid, NudgeError, Unauthorized
from nudge.integrations.limits import Counters, Policy, take
from nudge.store import credentials
from nudge.store.db import Database


class Limiting(Protocol):
    """What an integration call needs of the running platform."""

    db: Database
    counters: Counters

    @property
    def settings(self) -> Settings: ...


# What each gate lets an app do, for the 403 that says which action to list.
_DOING = {
    "create_conversation": "create conversations",
    "create_memories": "create memories",
    "read_memories": "read memories",
    "read_conversations": "read conversations",
}


def authorize(
    conn: Connection, authorization: str | None, app_id: str, uid: str, action: str | None
) -> AppRecord:
    """The app, once its secret, the user's install and (unless None) ``action`` are checked."""
    auth.parse_bearer(authorization)
    app = get_app(conn, app_id)
    try:
        auth.identify(conn, authorization, auth.APP, app_id=app_id)
    except Unauthorized as exc:
        raise Forbidden(f"invalid API key: {exc.detail}") from None
    if not uid.strip():
        raise Invalid("uid: required and must not be empty")
    if not credentials.is_installed(conn, uid, app_id):
        raise Forbidden(
            f"app {app_id!r} is not enabled for user {uid!r}: the user installs it first "
            f"(POST /v1/users/{{uid}}/apps/{{app_id}})"
        )
    if action is not None and not app.manifest.allows(action):
        raise Forbidden(
            f"app does not have the capability to {_DOING[action]}: list "
            f'{{"action": "{action}"}} in its manifest\'s external_integration.actions'
        )
    return app


@asynccontextmanager
async def limited(
    platform: Limiting,
    authorization: str | None,
    app_id: str,
    uid: str,
    action: str,
    policy: Policy,
) -> AsyncIterator[RateLimit]:
    """A create call: ``action`` checked, the request counted under ``policy`` (429 past it),
    and the window's headers added to any error the body raises."""
    work = partial(authorize, authorization=authorization, app_id=app_id, uid=uid, action=action)
    await platform.db.query(work)
    rate = await take(platform.counters, policy, app_id, uid)
    try:
        yield rate
    except NudgeError as exc:
        exc.headers.update(rate.headers())
        raise
