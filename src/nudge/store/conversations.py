"""SQL of conversations and segments: live ingestion, flush claims, finishing, imports, reads."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)

from nudge.store.fast import Statement, insert_statement
from nudge.store.models import App, Conversation, Install, Segment, User
from nudge.store.sql import claimable, dialect_insert

# The status of live conversations, written into statements as a literal: the partial indexes
# that hold only live rows are usable (SQLite cannot match a bound parameter to them).
LIVE: Any = literal_column("'live'")
SEGMENT_COLUMNS = [c.name for c in Segment.__table__.columns if c.name != "id"]
_SESSION = (Conversation.id, Conversation.session_id, Conversation.uid)  # a live one's keys

# Built once: the hot path of ingestion. ``session_id IN (...) AND uid IN (...)``, not the row
# value ``(session_id, uid) IN (...)``, which SQLite answers by scanning. The extra combinations it
# allows (user A's session id that user B also streams under, in the same batch) at most schedule
# a flush of B's live conversation, which finds nothing new, and push its silence deadline.
_SCHEDULE = Statement(
    update(Conversation)
    .where(
        Conversation.session_id.in_(bindparam("sids", expanding=True)),
        Conversation.uid.in_(bindparam("uids", expanding=True)),
        Conversation.status == LIVE,
    )
    .values(
        flush_due_at=func.coalesce(Conversation.flush_due_at, bindparam("now")),
        silence_due_at=bindparam("silent_at"),
    )
    .returning(*_SESSION)
)
_INSERT_SEGMENTS = insert_statement(Segment, SEGMENT_COLUMNS)


def schedule_live(
    conn: Connection, sids: list[str], uids: list[str], now: float, silent_at: float | None
) -> list[Any]:
    """Schedule the flush of the live conversations of these sessions and push their silence
    deadline; their ``(id, session_id, uid)``."""
    params = {"sids": sids, "uids": uids, "now": now, "silent_at": silent_at}
    return _SCHEDULE.rows(conn, params)


def known_users(conn: Connection, uids: Collection[str]) -> set[str]:
    return set(conn.execute(select(User.uid).where(User.uid.in_(uids))).scalars())


def open_live(conn: Connection, rows: list[dict[str, Any]]) -> list[Any]:
    """Insert live conversations; ``ON CONFLICT DO NOTHING`` on the live-session index (one
    another process just opened is left out). The ``(id, session_id, uid)`` of those inserted."""
    insert_new = (
        dialect_insert(conn)(Conversation)
        .values(rows)
        .on_conflict_do_nothing(
            index_elements=[Conversation.uid, Conversation.session_id],
            index_where=Conversation.status == LIVE,
        )
    )
    return list(conn.execute(insert_new.returning(*_SESSION)))


def insert_segments(conn: Connection, rows: list[dict[str, Any]]) -> None:
    _INSERT_SEGMENTS.run_many(conn, rows)


def insert_conversation(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(Conversation).values(row))


def conversation(conn: Connection, conversation_id: str) -> Any:
    return conn.execute(select(Conversation).where(Conversation.id == conversation_id)).one()


def segments_of(conn: Connection, conversation_id: str) -> list[Any]:
    query = select(Segment).where(Segment.conversation_id == conversation_id)
    return list(conn.execute(query.order_by(Segment.id)).all())


def latest_in_session(conn: Connection, uid: str, session_id: str) -> Any | None:
    """The session's most recent conversation (None when the session was never used)."""
    return conn.execute(
        select(Conversation)
        .where(Conversation.uid == uid, Conversation.session_id == session_id)
        .order_by(Conversation.created_at.desc())
        .limit(1)
    ).first()


def update_conversation(conn: Connection, conversation_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(Conversation).where(Conversation.id == conversation_id).values(values))


def finish_live(conn: Connection, uid: str, session_id: str, now: float) -> str | None:
    """Mark the session's live conversation ``finishing`` with its flush due; its id."""
    return conn.execute(
        update(Conversation)
        .where(
            Conversation.uid == uid,
            Conversation.session_id == session_id,
            Conversation.status == LIVE,
        )
        .values(
            status="finishing",
            finished_at=now,
            silence_due_at=None,
            flush_due_at=func.coalesce(Conversation.flush_due_at, now),
        )
        .returning(Conversation.id)
    ).scalar()


@lru_cache(maxsize=2)
def _silent_statement(postgres: bool) -> Statement:
    """As the flush claim, so with any number of processes each is ended once. ``finished_at`` is
    when its last segment came."""
    due = and_(Conversation.silence_due_at <= bindparam("now"), Conversation.status == LIVE)
    pick = (
        select(Conversation.id)
        .where(due)
        .order_by(Conversation.silence_due_at)
        .limit(bindparam("limit"))
    )
    return Statement(
        update(Conversation)
        .where(claimable(Conversation.id, pick, due, postgres))
        .values(
            status="finishing",
            finished_at=Conversation.silence_due_at - bindparam("silence_s"),
            silence_due_at=None,
            flush_due_at=func.coalesce(Conversation.flush_due_at, bindparam("now")),
        )
        .returning(Conversation.id)
    )


def finish_silent(conn: Connection, now: float, silence_s: float, limit: int) -> list[str]:
    """Mark up to ``limit`` live conversations whose silence deadline passed ``finishing``."""
    params = {"now": now, "silence_s": silence_s, "limit": limit}
    return [r.id for r in _silent_statement(conn.dialect.name == "postgresql").rows(conn, params)]


def queue_finished(conn: Connection, conversation_id: str, now: float) -> None:
    """Mark a conversation stored whole ``finishing`` with its flush due and its segments sent."""
    sent = select(func.coalesce(func.max(Segment.id), 0)).where(
        Segment.conversation_id == conversation_id
    )
    update_conversation(
        conn,
        conversation_id,
        {
            "status": "finishing",
            "silence_due_at": None,
            "flushed_upto": sent.scalar_subquery(),
            "flush_due_at": now,
            "flush_lease_until": None,
        },
    )


# --- Flush claims (see nudge.proactive.flushes) -----------------------------------------------

_NOW: Any = bindparam("now")
_DUE = and_(
    Conversation.flush_due_at <= _NOW,
    or_(Conversation.flush_lease_until.is_(None), Conversation.flush_lease_until <= _NOW),
)
_BECAME_DUE = case(
    (Conversation.flush_lease_until > Conversation.flush_due_at, Conversation.flush_lease_until),
    else_=Conversation.flush_due_at,
)
_NEW_SEGMENTS = Statement(
    select(Segment)
    .join(Conversation, Conversation.id == Segment.conversation_id)
    .where(
        Conversation.id.in_(bindparam("ids", expanding=True)),
        Segment.id > Conversation.flushed_upto,
    )
    .order_by(Segment.id)
)
_MARK_SENT = Statement(
    update(Conversation)
    .where(Conversation.id == bindparam("cid"))
    .values(flushed_upto=bindparam("upto"), flush_lease_until=bindparam("gate"))
)
_APP = (App.id, App.name, App.manifest, App.webhook_secret, App.webhook_failing_since)
_INSTALLED_APPS = Statement(
    select(Install.uid, Install.scopes, *_APP)
    .join(App, App.id == Install.app_id)
    .where(Install.uid.in_(bindparam("uids", expanding=True)), App.status == "active")
    .order_by(App.id)
)


_RETURNED = "id uid session_id status summary_pending flushed_upto started_at flush_lease_until"
_CLAIMED = [Conversation.__table__.c[name] for name in _RETURNED.split()]


@lru_cache(maxsize=8)
def _claim_statement(postgres: bool, by_id: bool, limit: int) -> Statement:
    """Claim due conversations: an UPDATE of the rows picked by a (locking, on PostgreSQL)
    subquery."""
    pick = select(Conversation.id).where(_DUE)
    if by_id:
        pick = pick.where(Conversation.id.in_(bindparam("cids", expanding=True)))
    pick = pick.order_by(Conversation.flush_due_at).limit(limit)
    return Statement(
        update(Conversation)
        .where(claimable(Conversation.id, pick, _DUE, postgres))
        .values(
            flush_lease_until=_BECAME_DUE,  # the window's gate is set once segments are read
            flush_due_at=None,
            status=case(
                (Conversation.status == "finishing", "finished"), else_=Conversation.status
            ),
        )
        .returning(*_CLAIMED)
    )


def claim_due(
    conn: Connection, now: float, limit: int, conversation_ids: list[str] | None = None
) -> list[Any]:
    """Claim up to ``limit`` conversations whose flush is due (among ``conversation_ids`` when
    given): "finishing" ones become "finished"; ``flush_lease_until`` is when each became due."""
    claim = _claim_statement(conn.dialect.name == "postgresql", conversation_ids is not None, limit)
    return claim.rows(conn, {"now": now, "cids": conversation_ids or []})


def new_segments(conn: Connection, conversation_ids: list[str]) -> list[Any]:
    """The segments of these conversations not flushed yet, in id order."""
    return _NEW_SEGMENTS.rows(conn, {"ids": conversation_ids})


def mark_sent(conn: Connection, sent: list[tuple[str, int, float]]) -> None:
    """Per ``(conversation_id, last segment id sent, next gate)``: advance ``flushed_upto``."""
    _MARK_SENT.run_many(conn, [{"cid": c, "upto": upto, "gate": gate} for c, upto, gate in sent])


def installed_apps(conn: Connection, uids: list[str]) -> list[Any]:
    """The active apps these users installed: the install's uid and scopes, the app's row."""
    return _INSTALLED_APPS.rows(conn, {"uids": uids})


# --- Reads and search (Omi's integration API) -------------------------------------------------


def conversations_by_id(conn: Connection, ids: list[str]) -> dict[str, Any]:
    return {r.id: r for r in conn.execute(select(Conversation).where(Conversation.id.in_(ids)))}


def first_segments(conn: Connection, ids: list[str], max_segments: int) -> list[Any]:
    """The segments of these conversations, the first ``max_segments`` of each (-1: all)."""
    n = func.row_number().over(partition_by=Segment.conversation_id, order_by=Segment.id)
    ranked = select(Segment, n.label("n")).where(Segment.conversation_id.in_(ids))
    sub = ranked.subquery()
    query = select(sub).order_by(sub.c.conversation_id, sub.c.id)
    if max_segments > 0:
        query = query.where(sub.c.n <= max_segments)
    return list(conn.execute(query))


_MATCH_POSTGRES = "conversations.search @@ plainto_tsquery('english', :q)"
_MATCH_SQLITE = (
    "conversations.rowid IN (SELECT rowid FROM conversations_fts WHERE conversations_fts MATCH :q)"
)


def _where(
    conn: Connection,
    uid: str,
    *,
    include_discarded: bool = True,
    statuses: Sequence[str] | None = None,
    start: float | None = None,
    end: float | None = None,
    words: Sequence[str] = (),
) -> list[ColumnElement[bool]]:
    """The user's conversations (``statuses``: Nudge's); with ``words``, those with every word in
    the title, overview or transcript (the full-text index of migration 0001)."""
    where: list[ColumnElement[bool]] = [Conversation.uid == uid]
    if not include_discarded:
        where.append(Conversation.discarded.is_(False))
    if statuses is not None:
        where.append(Conversation.status.in_(statuses))
    if start is not None:
        where.append(Conversation.created_at >= start)
    if end is not None:
        where.append(Conversation.created_at <= end)
    if words and conn.dialect.name == "postgresql":
        match = text(_MATCH_POSTGRES).bindparams(q=" ".join(words))
    elif words:
        match = text(_MATCH_SQLITE).bindparams(q=" ".join(f'"{w}"' for w in words))
    return where + [match] if words else where  # type: ignore[list-item]


def page_ids(conn: Connection, uid: str, limit: int, offset: int, **filters: Any) -> list[str]:
    """Ids of the user's conversations matching ``filters`` (see :func:`_where`), newest first."""
    query = (
        select(Conversation.id)
        .where(*_where(conn, uid, **filters))
        .order_by(Conversation.created_at.desc(), Conversation.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(conn.scalars(query))


def count(conn: Connection, uid: str, **filters: Any) -> int:
    query = select(func.count()).select_from(Conversation).where(*_where(conn, uid, **filters))
    return int(conn.scalar(query) or 0)
