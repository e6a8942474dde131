"""Statements run on the driver give what SQLAlchemy gives: rows, types, counts and errors."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.exc import IntegrityError

from nudge.store.db import Database
from nudge.store.fast import Statement, insert_statement
from nudge.store.models import Install, User

ADD_USER = insert_statement(User, ["uid", "name", "token_hash", "created_at"])
ADD_INSTALL = insert_statement(Install, ["uid", "app_id", "scopes", "installed_at"])
USERS = Statement(
    select(User.uid, User.name).where(User.uid.in_(bindparam("uids", expanding=True)))
)
# A literal IN list (bound in the statement itself) next to an expanding parameter.
NAMED = Statement(
    select(User.uid)
    .where(User.name.in_(["Ana", "Bo"]), User.uid.in_(bindparam("uids", expanding=True)))
    .order_by(User.uid)
)
SCOPES = Statement(select(Install.scopes).where(Install.uid == bindparam("uid")))
RENAME = Statement(
    update(User).where(User.uid == bindparam("who")).values(name=bindparam("new_name"))
)


def users(n: int) -> list[dict[str, Any]]:
    names = ["Ana", "Bo", "Cy"]
    return [
        {"uid": f"u{i}", "name": names[i % 3], "token_hash": f"h{i}", "created_at": 1.0}
        for i in range(n)
    ]


async def test_rows_counts_and_types_match_sqlalchemy(db: Database) -> None:
    def work(conn: Connection) -> dict[str, Any]:
        ADD_USER.run_many(conn, users(4))
        return {
            "some": USERS.rows(conn, {"uids": ["u1", "u3", "nobody"]}),
            "none": USERS.rows(conn, {"uids": []}),
            "named": [r.uid for r in NAMED.rows(conn, {"uids": ["u0", "u1", "u2", "u3"]})],
            "renamed": RENAME.run(conn, {"who": "u2", "new_name": "Di"}),
            "missed": RENAME.run(conn, {"who": "nobody", "new_name": "x"}),
            "after": USERS.rows(conn, {"uids": ["u2"]}),
            "orm": conn.execute(USERS.statement, {"uids": ["u1", "u3"]}).all(),
        }

    found = await db.run_in_transaction(work, on_loop=True)
    assert sorted((r.uid, r.name) for r in found["some"]) == [("u1", "Bo"), ("u3", "Ana")]
    assert sorted(found["some"]) == sorted(tuple(r) for r in found["orm"])
    assert found["none"] == []
    assert found["named"] == ["u0", "u1", "u3"]  # u2 is "Cy"
    assert (found["renamed"], found["missed"]) == (1, 0)
    assert [(r.uid, r.name) for r in found["after"]] == [("u2", "Di")]


async def test_json_goes_in_and_comes_out_as_sqlalchemy_does(db: Database) -> None:
    from nudge.core import apps
    from nudge.core.manifest import Manifest

    async with db.begin() as conn:
        app = await apps.create_app(conn, Manifest(name="Fast"))
    install = {"uid": "u0", "app_id": app["app_id"], "scopes": ["user_name"], "installed_at": 1.0}

    def work(conn: Connection) -> tuple[Any, Any]:
        ADD_USER.run_many(conn, users(1))
        ADD_INSTALL.run_many(conn, [install])
        fast = SCOPES.rows(conn, {"uid": "u0"})
        plain = conn.execute(SCOPES.statement, {"uid": "u0"}).one()
        return fast[0].scopes, plain.scopes

    fast, plain = await db.run_in_transaction(work, on_loop=True)
    assert fast == plain == ["user_name"]


async def test_driver_errors_are_sqlalchemy_errors(db: Database) -> None:
    await db.run_in_transaction(lambda conn: ADD_USER.run_many(conn, users(1)))
    with pytest.raises(IntegrityError):  # the same token hash again
        await db.run_in_transaction(lambda conn: ADD_USER.run_many(conn, users(1)), on_loop=True)
    # Nothing of the failed transaction stayed.
    rows = await db.run_in_transaction(lambda conn: USERS.rows(conn, {"uids": ["u0"]}))
    assert len(rows) == 1
