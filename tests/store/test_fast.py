"""Statements run on the driver give what SQLAlchemy gives: rows, types, counts and errors."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Boolean, Connection, bindparam, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from nudge.store.db import Database
from nudge.store.fast import Statement, insert_statement
from nudge.store.models import App, Conversation, Install, Segment, User

ADD_USER = insert_statement(User, ["uid", "name", "token_hash", "created_at"])
APP_COLUMNS = ["id", "name", "description", "manifest", "webhook_secret", "status", "status_reason"]
ADD_APP = insert_statement(App, [*APP_COLUMNS, "created_at"])
ADD_INSTALL = insert_statement(Install, ["uid", "app_id", "scopes", "installed_at"])
SEGMENT_COLUMNS = ["conversation_id", "uid", "text", "speaker", "speaker_id", "is_user", "start"]
ADD_SEGMENT = insert_statement(Segment, [*SEGMENT_COLUMNS, "end", "created_at"])
USERS = Statement(
    select(User.uid, User.name).where(User.uid.in_(bindparam("uids", expanding=True)))
)
# A literal IN list (bound in the statement itself) next to an expanding parameter.
NAMED = Statement(
    select(User.uid)
    .where(User.name.in_(["Ana", "Bo"]), User.uid.in_(bindparam("uids", expanding=True)))
    .order_by(User.uid)
)
# Two expanding lists, their lengths varying independently.
BOTH = Statement(
    select(User.uid)
    .where(
        User.uid.in_(bindparam("uids", expanding=True)),
        User.name.in_(bindparam("names", expanding=True)),
    )
    .order_by(User.uid)
)
SCOPES = Statement(select(Install.scopes, App.manifest).join(App, App.id == Install.app_id))
SEGMENTS = Statement(
    select(Segment.text, Segment.is_user, (Segment.speaker_id == 0).label("first"))
    .where(Segment.is_user == bindparam("mine", type_=Boolean))
    .order_by(Segment.id)
)
# Unlabeled functions: SQLAlchemy names their columns count_1, min_1.
COUNTS = Statement(
    select(Segment.is_user, func.count(), func.min(Segment.text))
    .group_by(Segment.is_user)
    .order_by(Segment.is_user)
)
RENAME = Statement(
    update(User).where(User.uid == bindparam("who")).values(name=bindparam("new_name"))
)
RENAMED = Statement(
    update(User)
    .where(User.name == bindparam("old"))
    .values(name=bindparam("new_name"))
    .returning(User.uid, User.name)
)


def users(n: int) -> list[dict[str, Any]]:
    names = ["Ana", "Bo", "Cy"]
    return [
        {"uid": f"u{i}", "name": names[i % 3], "token_hash": f"h{i}", "created_at": 1.0}
        for i in range(n)
    ]


def same(conn: Connection, statement: Statement, params: dict[str, Any] | None = None) -> list[Any]:
    """The statement's rows, checked against SQLAlchemy's own: values, their types, names."""
    fast = statement.rows(conn, params)
    plain = conn.execute(statement.statement, params or {}).all()
    assert [tuple(r) for r in fast] == [tuple(r) for r in plain]
    assert [[type(v) for v in r] for r in fast] == [[type(v) for v in r] for r in plain]
    assert all(r._fields == p._fields for r, p in zip(fast, plain))
    return fast


async def test_rows_counts_and_in_lists_match_sqlalchemy(db: Database) -> None:
    def work(conn: Connection) -> dict[str, Any]:
        ADD_USER.run_many(conn, users(6))
        ADD_USER.run_many(conn, [])
        return {
            "lists": [
                sorted(r.uid for r in same(conn, USERS, {"uids": [f"u{i}" for i in range(n)]}))
                for n in (0, 1, 2, 5, 2, 0)
            ],
            "nobody": same(conn, USERS, {"uids": ["nobody"]}),
            "named": [r.uid for r in same(conn, NAMED, {"uids": ["u0", "u1", "u2", "u3"]})],
            "both": [
                [r.uid for r in same(conn, BOTH, {"uids": uids, "names": names})]
                for uids, names in [
                    (["u0", "u1", "u2"], ["Ana"]),
                    (["u0", "u1", "u2"], ["Ana", "Bo"]),
                    (["u0"], []),
                    ([], ["Ana"]),
                ]
            ],
            "renamed": RENAME.run(conn, {"who": "u2", "new_name": "Di"}),
            "missed": RENAME.run(conn, {"who": "nobody", "new_name": "x"}),
            "returned": sorted(RENAMED.rows(conn, {"old": "Ana", "new_name": "Eve"})),
            "none_returned": RENAMED.rows(conn, {"old": "nobody", "new_name": "x"}),
            "after": same(conn, USERS, {"uids": ["u2", "u3"]}),
        }

    found = await db.write(work)
    five = ["u0", "u1", "u2", "u3", "u4"]
    assert found["lists"] == [[], ["u0"], ["u0", "u1"], five, ["u0", "u1"], []]
    assert found["nobody"] == []
    assert found["named"] == ["u0", "u1", "u3"]  # u2 is "Cy"
    assert found["both"] == [["u0"], ["u0", "u1"], [], []]
    assert (found["renamed"], found["missed"]) == (1, 0)
    assert found["returned"] == [("u0", "Eve"), ("u3", "Eve")]
    assert found["returned"][0]._fields == ("uid", "name")
    assert found["none_returned"] == []
    assert sorted((r.uid, r.name) for r in found["after"]) == [("u2", "Di"), ("u3", "Eve")]


async def test_json_and_booleans_go_in_and_come_out_as_sqlalchemy_does(db: Database) -> None:
    manifest = {"name": "Fast", "capabilities": ["proactive_notification"], "nested": {"n": 1}}

    def work(conn: Connection) -> dict[str, Any]:
        ADD_USER.run_many(conn, users(1))
        app: dict[str, Any] = {"id": "a1", "name": "Fast", "description": "", "manifest": manifest}
        app |= {"webhook_secret": "s", "status": "active", "status_reason": "", "created_at": 1.0}
        ADD_APP.run_many(conn, [app])
        install = {"uid": "u0", "app_id": "a1", "scopes": ["user_name"], "installed_at": 1.0}
        ADD_INSTALL.run_many(conn, [install])
        conn.execute(insert(Conversation).values(id="c1", uid="u0", created_at=1, started_at=1))
        segment = {"conversation_id": "c1", "uid": "u0", "speaker": "S", "speaker_id": 0}
        ADD_SEGMENT.run_many(
            conn,
            [
                segment | {"text": t, "is_user": mine, "start": 0.0, "end": 1.0, "created_at": 1.0}
                for t, mine in [("hi", True), ("hello", False), ("ok", True)]
            ],
        )
        return {
            "json": same(conn, SCOPES),
            "mine": same(conn, SEGMENTS, {"mine": True}),
            "theirs": same(conn, SEGMENTS, {"mine": False}),
            "counts": same(conn, COUNTS),
        }

    found = await db.write(work)
    assert [tuple(r) for r in found["json"]] == [(["user_name"], manifest)]
    assert [tuple(r) for r in found["mine"]] == [("hi", True, True), ("ok", True, True)]
    assert [tuple(r) for r in found["theirs"]] == [("hello", False, True)]
    assert found["mine"][0].is_user is True and found["theirs"][0].is_user is False
    assert [tuple(r) for r in found["counts"]] == [(False, 1, "hello"), (True, 2, "hi")]
    assert found["counts"][0]._fields == ("is_user", "count_1", "min_1")


async def test_driver_errors_are_sqlalchemy_errors(db: Database) -> None:
    await db.write_alone(lambda conn: ADD_USER.run_many(conn, users(1)))
    with pytest.raises(IntegrityError) as raised:  # the same token hash again
        await db.write_alone(lambda conn: ADD_USER.run_many(conn, users(2)))
    assert isinstance(raised.value, DBAPIError)
    with pytest.raises(IntegrityError):  # a NOT NULL column, through rows() (RETURNING)
        await db.write_alone(lambda conn: RENAMED.rows(conn, {"old": "Ana", "new_name": None}))
    # Nothing of the failed transactions stayed.
    rows = await db.write(lambda conn: same(conn, USERS, {"uids": ["u0", "u1"]}))
    assert [tuple(r) for r in rows] == [("u0", "Ana")]


async def test_python_side_defaults_are_left_to_sqlalchemy(db: Database) -> None:
    # Conversation.status has a Python-side default: the driver path would write NULL.
    partial = Statement(insert(Conversation).values(id=bindparam("id"), uid=bindparam("uid")))

    def work(conn: Connection) -> None:
        partial.run(conn, {"id": "c1", "uid": "u0"})

    if db.is_sqlite:
        with pytest.raises(ValueError, match="cannot run on the driver"):
            await db.write(work)
