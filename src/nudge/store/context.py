"""SQL of the reads behind the proactive scopes (built once: they run on the notification path)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, Connection, Float, String, bindparam, select, text

from nudge.store.fast import Statement
from nudge.store.models import ChatMessage, Segment, User, UserFact

_LAST_SEGMENTS = Statement(
    select(Segment.text)
    .where(Segment.conversation_id == bindparam("cid"))
    .order_by(Segment.id.desc())
    .limit(bindparam("n"))
)
_USER_NAME = Statement(select(User.name).where(User.uid == bindparam("uid")))
_USER_FACTS = Statement(
    select(UserFact.text).where(UserFact.uid == bindparam("uid")).order_by(UserFact.id)
)
_CHAT = Statement(
    select(ChatMessage.sender, ChatMessage.text)
    .where(ChatMessage.uid == bindparam("uid"), ChatMessage.app_id == bindparam("app_id"))
    .order_by(ChatMessage.id.desc())
    .limit(bindparam("n"))
)

_PAST_COLUMNS: dict[str, Any] = dict.fromkeys(
    ("id", "title", "overview", "category", "snippet"), String
)
_PAST_COLUMNS |= {"action_items": JSON, "events": JSON, "created_at": Float, "started_at": Float}
_SELECT = "SELECT c.id, c.title, c.overview, c.category, c.action_items, c.events, c.created_at, "
# Past conversations only: the user's, not the live one, ended, not discarded, in the date range.
_PAST = (
    "c.uid = :uid AND c.id != :cid AND c.status != 'live' AND NOT c.discarded "
    "AND c.started_at >= :since AND c.started_at < :until"
)
_SEARCH_SQLITE = (
    f"{_SELECT}c.started_at, snippet(conversations_fts, 2, '', '', '…', 32) AS snippet "
    "FROM conversations_fts JOIN conversations c ON c.rowid = conversations_fts.rowid "
    f"WHERE conversations_fts MATCH :q AND {_PAST} ORDER BY bm25(conversations_fts) LIMIT :n"
)
_RECENT = Statement(
    text(
        f"{_SELECT}c.started_at, '' AS snippet FROM conversations c WHERE {_PAST} "
        "ORDER BY c.created_at DESC LIMIT :n"
    ).columns(**_PAST_COLUMNS)
)


@lru_cache(maxsize=4)
def _search(postgres: bool, required: bool) -> Statement:
    """Full-text search of past conversations. On SQLite one FTS5 query string carries every
    term; on PostgreSQL the required terms (``:req``) and the ranking terms (``:q``) are two
    ``websearch_to_tsquery``, joined by ``&&``."""
    if not postgres:
        return Statement(text(_SEARCH_SQLITE).columns(**_PAST_COLUMNS))
    query = "websearch_to_tsquery('english', :q)"
    if required:
        query = f"websearch_to_tsquery('english', :req) && {query}"
    return Statement(
        text(
            f"{_SELECT}c.started_at, "
            "ts_headline('english', c.transcript, w.q, 'MaxWords=35, MinWords=12') AS snippet "
            f"FROM conversations c, (SELECT {query} AS q) w WHERE c.search @@ w.q AND {_PAST} "
            "ORDER BY ts_rank(c.search, w.q) DESC LIMIT :n"
        ).columns(**_PAST_COLUMNS)
    )


def last_segment_texts(conn: Connection, conversation_id: str, n: int) -> list[str]:
    """The texts of the conversation's last ``n`` segments, newest first."""
    return [r.text for r in _LAST_SEGMENTS.rows(conn, {"cid": conversation_id, "n": n})]


def user_name(conn: Connection, uid: str) -> str | None:
    names = _USER_NAME.rows(conn, {"uid": uid})
    return names[0].name if names else None


def fact_texts(conn: Connection, uid: str) -> list[str]:
    return [f.text for f in _USER_FACTS.rows(conn, {"uid": uid})]


def last_chat(conn: Connection, uid: str, app_id: str, n: int) -> list[Any]:
    """The last ``n`` messages between the user and the app (``sender``, ``text``), newest first."""
    return _CHAT.rows(conn, {"uid": uid, "app_id": app_id, "n": n})


def search_past(conn: Connection, params: dict[str, Any], *, required: bool = False) -> list[Any]:
    """Past conversations matching ``params["q"]`` (and, on PostgreSQL with ``required``,
    ``params["req"]``), best first; ``params`` also holds uid, cid (the live one), since, until
    and n."""
    return _search(conn.dialect.name == "postgresql", required).rows(conn, params)


def recent_past(conn: Connection, params: dict[str, Any]) -> list[Any]:
    """The most recent past conversations (``params`` as :func:`search_past`, without q)."""
    return _RECENT.rows(conn, params)
