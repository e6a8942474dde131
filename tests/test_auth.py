"""nudge.auth: credentials read, looked up and refused with the words of every surface."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from functools import partial

import pytest
from sqlalchemy import Connection, insert

from nudge import auth
from nudge.errors import Forbidden, NudgeError, Unauthorized
from nudge.ids import hash_secret, new_app_secret, new_user_token
from nudge.store.db import Database
from nudge.store.migrate import upgrade
from nudge.store.models import App, AppKey, User

ADMIN = "admin-token"
SECRET, REVOKED, ANA, BOB = new_app_secret(), new_app_secret(), new_user_token(), new_user_token()


def refused(call: Callable[[], object]) -> NudgeError:
    with pytest.raises(NudgeError) as caught:
        call()
    return caught.value


def test_read_checks_the_shape_without_a_lookup() -> None:
    read = partial(auth.read, admin_token=ADMIN)
    assert read(f"Bearer {ADMIN}", auth.ADMIN) == auth.Admin()
    assert read(f"bearer  {ADMIN} ", auth.USER) == auth.Admin()
    assert read(f"Bearer {SECRET}", auth.DEVELOPER) == auth.Token("app", hash_secret(SECRET))
    assert read(f"Bearer {ANA}", auth.ANY) == auth.Token("user", hash_secret(ANA))
    # An app secret is never compared with the admin token.
    assert refused(partial(read, f"Bearer {ADMIN}", auth.APP)).detail.startswith(
        "malformed app secret"
    )
    cases = {
        (None, auth.USER): "missing Authorization header: send 'Authorization: Bearer "
        "<user token or admin token>'",
        ("Basic x", auth.APP): "malformed Authorization header: expected 'Bearer <app secret>'",
        (f"Bearer {ANA}", auth.ADMIN): "this call needs the admin token (NUDGE_ADMIN_TOKEN)",
        (f"Bearer {SECRET}", auth.USER): "malformed token: expected the admin token or a user "
        "token ('ut_' and 48 hex digits)",
        (f"Bearer {ANA}", auth.DEVELOPER): "malformed app secret: expected 'sk_' followed by 32 "
        "hex characters",
    }
    for (header, takes), detail in cases.items():
        exc = refused(partial(read, header, takes))
        assert (type(exc), exc.detail) == (Unauthorized, detail)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await upgrade(database_url)
    database = Database(database_url)

    def seed(conn: Connection) -> None:
        app = {"name": "A", "manifest": {}, "webhook_secret": "w", "created_at": 0}
        conn.execute(insert(App), [{"id": "app_a", **app}, {"id": "app_b", **app}])
        key = {"app_id": "app_a", "hint": "sk_", "created_at": 0}
        conn.execute(
            insert(AppKey),
            [
                {"id": "k1", "key_hash": hash_secret(SECRET), "revoked_at": None, **key},
                {"id": "k2", "key_hash": hash_secret(REVOKED), "revoked_at": 1.0, **key},
            ],
        )
        conn.execute(
            insert(User),
            [
                {"uid": uid, "name": uid.title(), "token_hash": hash_secret(token), "created_at": 0}
                for uid, token in (("ana", ANA), ("bob", BOB))
            ],
        )

    await database.write_alone(seed)
    yield database
    await database.close()


async def test_identify_names_the_caller_or_refuses(db: Database) -> None:
    who = partial(auth.caller, db, admin_token=ADMIN)
    assert await who(f"Bearer {ADMIN}") == auth.Admin()
    assert await who(f"Bearer {ANA}") == auth.User("ana", "Ana")
    assert await who(f"Bearer {SECRET}", auth.DEVELOPER, app_id="app_a") == auth.App("app_a")
    assert await who(f"Bearer {BOB}", auth.USER, uid="bob") == auth.User("bob", "Bob")
    refusals = [
        (
            (f"Bearer {BOB}", auth.USER),
            {"uid": "ana"},
            Forbidden,
            "this user token belongs to another user",
        ),
        (
            (f"Bearer ut_{'0' * 48}", auth.USER),
            {"uid": "ana"},
            Unauthorized,
            "unknown token: use the user's token or the admin token",
        ),
        (
            (f"Bearer ut_{'0' * 48}",),
            {},
            Unauthorized,
            "unknown token: use the admin token, a user token or an app secret",
        ),
        (
            (f"Bearer {REVOKED}", auth.APP),
            {},
            Unauthorized,
            "unknown or revoked app secret: create a key with POST /v1/apps/{id}/keys",
        ),
        (
            (f"Bearer {SECRET}", auth.APP),
            {"app_id": "app_b"},
            Unauthorized,
            "this app secret belongs to another app, not 'app_b'",
        ),
    ]
    for args, kwargs, kind, detail in refusals:
        with pytest.raises(NudgeError) as caught:
            await who(*args, **kwargs)
        assert (type(caught.value), caught.value.detail) == (kind, detail)
    # The synchronous form, as work on a read connection, answers the same.
    found = await db.query(partial(auth.identify, authorization=f"Bearer {SECRET}"))
    assert found == auth.App("app_a")


async def test_the_batch_form_checks_every_token_in_one_go(db: Database) -> None:
    claims = [
        (hash_secret(ANA), "ana"),
        (None, "anyone"),  # checked already (the admin token)
        (hash_secret(BOB), "ana"),
        (hash_secret(f"ut_{'0' * 48}"), "ana"),
    ]
    refused = await db.query(partial(auth.user_token_refusals, claims=claims))
    assert sorted(refused) == [2, 3]
    assert isinstance(refused[2], Forbidden) and isinstance(refused[3], Unauthorized)
    assert await db.query(partial(auth.user_token_refusals, claims=[(None, "x")])) == {}
