"""Who is calling: the one place a credential (admin token, user token, app secret) is checked."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import Connection

from nudge.errors import Forbidden, NudgeError, Unauthorized
from nudge.ids import APP_SECRET_RE, USER_TOKEN_RE, hash_secret
from nudge.store import credentials

if TYPE_CHECKING:
    from nudge.store.db import Database


@dataclass(frozen=True)
class Admin:
    """The operator (``NUDGE_ADMIN_TOKEN``)."""


@dataclass(frozen=True)
class User:
    uid: str
    name: str


@dataclass(frozen=True)
class App:
    app_id: str


class Token(NamedTuple):
    """A user token (``kind`` "user") or app secret ("app") of the right shape, by its stored
    hash: not looked up yet (a tuple: cheaper to make than a frozen dataclass, per request)."""

    kind: str
    hash: str


Caller = Admin | User | App

# What a call takes, named as its 401s name it.
ADMIN = "admin token"
USER = "user token or admin token"
APP = "app secret"
DEVELOPER = "app secret or admin token"
ANY = "admin, user or app token"


def parse_bearer(authorization: str | None, credential: str = APP) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or 401 saying what is wrong and
    which ``credential`` the call takes."""
    if not authorization:
        raise Unauthorized(
            f"missing Authorization header: send 'Authorization: Bearer <{credential}>'"
        )
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(f"malformed Authorization header: expected 'Bearer <{credential}>'")
    return token


def read(authorization: str | None, takes: str = ANY, *, admin_token: str = "") -> Admin | Token:
    """The credential of an ``Authorization`` header, checked for its shape without a lookup:
    the admin token (compared in constant time: how long a wrong one took must not tell how
    close it was), or a token by its hash; 401 for anything that ``takes`` does not take."""
    token = parse_bearer(authorization, takes)
    if takes != APP and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Admin()
    if takes == ADMIN:
        raise Unauthorized("this call needs the admin token (NUDGE_ADMIN_TOKEN)")
    if takes != USER and APP_SECRET_RE.match(token):
        return Token("app", hash_secret(token))
    if takes != ANY and takes != USER:
        raise Unauthorized("malformed app secret: expected 'sk_' followed by 32 hex characters")
    if not USER_TOKEN_RE.match(token):
        raise Unauthorized(
            "malformed token: expected the admin token or a user token ('ut_' and 48 hex digits)"
        )
    return Token("user", hash_secret(token))


def user_token_refusal(owner: str | None, uid: str | None) -> NudgeError | None:
    """Why a user token that belongs to ``owner`` (None: to nobody) may not act for ``uid``
    (None: for its own user)."""
    if owner is None:
        return Unauthorized("unknown token: use the user's token or the admin token")
    if uid is not None and owner != uid:
        return Forbidden("this user token belongs to another user")
    return None


def app_key_refusal(owner: str | None, app_id: str | None) -> NudgeError | None:
    """Why an app secret of ``owner`` (None: unknown or revoked) may not act for ``app_id``
    (None: for its own app). Also the acceptance batch's check."""
    if owner is None:
        return Unauthorized(
            "unknown or revoked app secret: create a key with POST /v1/apps/{id}/keys"
        )
    if app_id is not None and owner != app_id:
        return Unauthorized(f"this app secret belongs to another app, not {app_id!r}")
    return None


def identify(
    conn: Connection,
    authorization: str | None | Admin | Token,
    takes: str = ANY,
    *,
    admin_token: str = "",
    uid: str | None = None,
    app_id: str | None = None,
) -> Caller:
    """Who the ``Authorization`` header (or the credential :func:`read` made of it) belongs to,
    among what ``takes`` takes; 401 (403 for another user's token) otherwise. With ``uid``, a
    user token must be that user's; with ``app_id``, an app secret must be that app's."""
    credential = authorization
    if not isinstance(credential, Admin | Token):
        credential = read(credential, takes, admin_token=admin_token)
    if isinstance(credential, Admin):
        return credential
    if credential.kind == "app":
        owner = credentials.app_of_key(conn, credential.hash)
        found: Caller = App(owner or "")
        refusal = app_key_refusal(owner, app_id)
    else:
        user = credentials.user_of_token(conn, credential.hash)
        if user is None and takes == ANY:
            raise Unauthorized("unknown token: use the admin token, a user token or an app secret")
        found = User(*(user or ("", "")))
        refusal = user_token_refusal(None if user is None else user[0], uid)
    if refusal is not None:
        raise refusal
    return found


async def caller(
    db: Database,
    authorization: str | None,
    takes: str = ANY,
    *,
    admin_token: str = "",
    uid: str | None = None,
    app_id: str | None = None,
) -> Caller:
    """:func:`identify` for the routes: the database is asked only for a token, never for the
    admin token."""
    credential = read(authorization, takes, admin_token=admin_token)
    if isinstance(credential, Admin):
        return credential
    work = partial(identify, authorization=credential, takes=takes, uid=uid, app_id=app_id)
    return await db.query(work)


def user_token_refusals(
    conn: Connection, claims: Sequence[tuple[str | None, str]]
) -> dict[int, NudgeError]:
    """The batch form, for ingestion: ``claims`` of (user token hash, the uid it acts for; a
    hash of None was checked already), one query for all; the refusal of each index refused."""
    hashes = {token_hash for token_hash, _ in claims if token_hash is not None}
    owners = credentials.token_owners(conn, hashes) if hashes else {}
    checked = {i: user_token_refusal(owners.get(h), uid) for i, (h, uid) in enumerate(claims) if h}
    return {i: refusal for i, refusal in checked.items() if refusal is not None}
