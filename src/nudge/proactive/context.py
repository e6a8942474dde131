"""The user's data behind the four scopes, read only for the scopes that count.

- ``user_name``: the display name.
- ``user_facts``: the user's facts, joined into one line.
- ``user_context``: the live session's recent transcript, plus the most relevant past
  conversations found by full-text search on words of that transcript (SQLite FTS5 table
  ``conversations_fts`` / PostgreSQL ``search`` tsvector column).
- ``user_chat``: the last 10 messages between the user and this app.

Each value is bounded so that a long history cannot crowd out the app's prompt. The reads are
synchronous: the pipeline runs them, with the install check, as one piece of work in one trip to
the database (see ``Pipeline._generate_and_send``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Float, String, bindparam, select, text

from nudge.proactive.ingest import speaker_label
from nudge.store.fast import Statement
from nudge.store.models import ChatMessage, Segment, User, UserFact

MAX_CHARS = {"user_name": 200, "user_facts": 4000, "user_context": 6000, "user_chat": 4000}
LIVE_SEGMENTS = 30
RELATED = 3
CHAT_MESSAGES = 10
KEYWORDS = 12

_WORD = re.compile(r"[^\W\d_]{3,}")
_STOPWORDS = """
    about above after again against all also and any are aren because been before being
    below between both but can cannot could did didn does doesn doing don down during each
    few for from further had hadn has hasn have haven having her here hers herself him
    himself his how into isn its itself just let like more most mustn myself nor not now off
    once only other ought our ours ourselves out over own really same shan she should
    shouldn some such than that the their theirs them themselves then there these they this
    those through too under until very was wasn way were weren what when where which while
    who whom why will with won would wouldn yeah yes you your yours yourself yourselves okay
    think know going get got want said say see one two well thing things something
"""
STOPWORDS = frozenset(_STOPWORDS.split())


def _bound(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def keywords(transcript: str, limit: int = KEYWORDS) -> list[str]:
    """The transcript's most frequent content words (later words win ties)."""
    words = [w for w in _WORD.findall(transcript.lower()) if w not in STOPWORDS]
    counts = Counter(words)
    last_seen = {w: i for i, w in enumerate(words)}
    return sorted(counts, key=lambda w: (-counts[w], -last_seen[w]))[:limit]


# The reads of a won claim, built once (they run in the claim's transaction on the event loop).
_LIVE_SEGMENTS = Statement(
    select(Segment.text, Segment.speaker, Segment.is_user)
    .where(Segment.conversation_id == bindparam("sid"))
    .order_by(Segment.id.desc())
    .limit(LIVE_SEGMENTS)
)
_USER_NAME = Statement(select(User.name).where(User.uid == bindparam("uid")))
_USER_FACTS = Statement(
    select(UserFact.text).where(UserFact.uid == bindparam("uid")).order_by(UserFact.id)
)
_CHAT = Statement(
    select(ChatMessage.sender, ChatMessage.text)
    .where(ChatMessage.uid == bindparam("uid"), ChatMessage.app_id == bindparam("app_id"))
    .order_by(ChatMessage.id.desc())
    .limit(CHAT_MESSAGES)
)
_RELATED_COLUMNS = {
    "id": String,
    "title": String,
    "overview": String,
    "started_at": Float,
    "snippet": String,
}
_RELATED = {
    "postgresql": Statement(
        text(
            "SELECT c.id, c.title, c.overview, c.started_at, "
            "ts_headline('english', c.transcript, q, 'MaxWords=35, MinWords=12') AS snippet "
            "FROM conversations c, websearch_to_tsquery('english', :q) q "
            "WHERE c.uid = :uid AND c.id != :sid AND c.search @@ q "
            "ORDER BY ts_rank(c.search, q) DESC LIMIT :n"
        ).columns(**_RELATED_COLUMNS)
    ),
    "sqlite": Statement(
        text(
            "SELECT c.id, c.title, c.overview, c.started_at, "
            "snippet(conversations_fts, 2, '', '', '…', 32) AS snippet "
            "FROM conversations_fts JOIN conversations c ON c.rowid = conversations_fts.rowid "
            "WHERE conversations_fts MATCH :q AND c.uid = :uid AND c.id != :sid "
            "ORDER BY bm25(conversations_fts) LIMIT :n"
        ).columns(**_RELATED_COLUMNS)
    ),
}


def live_segments(conn: Connection, session_id: str) -> list[Any]:
    """The session's last segments, oldest first."""
    return list(reversed(_LIVE_SEGMENTS.rows(conn, {"sid": session_id})))


def related_conversations(
    conn: Connection, uid: str, exclude_id: str, words: list[str], limit: int = RELATED
) -> list[dict[str, Any]]:
    """The user's past conversations that best match ``words`` (full-text, best first)."""
    if not words:
        return []
    postgres = conn.dialect.name == "postgresql"
    query = " or ".join(words) if postgres else " OR ".join(f'"{w}"' for w in words)
    params = {"uid": uid, "sid": exclude_id, "n": limit, "q": query}
    rows = _RELATED["postgresql" if postgres else "sqlite"].rows(conn, params)
    return [
        {
            "id": r.id,
            "title": r.title,
            "overview": r.overview,
            "started_at": r.started_at,
            "snippet": re.sub(r"\s+", " ", r.snippet or "").strip(),
        }
        for r in rows
    ]


def user_context(conn: Connection, uid: str, session_id: str) -> tuple[str, list[str]]:
    """The text for ``{{user_context}}`` and the ids of the past conversations it includes."""
    segments = live_segments(conn, session_id)
    words = keywords(" ".join(s.text for s in segments))  # the words said, not speaker labels
    related = related_conversations(conn, uid, session_id, words)
    parts = []
    if segments:
        live = "\n".join(f"{speaker_label(s.speaker, s.is_user)}: {s.text}" for s in segments)
        parts.append("Current conversation:\n" + live)
    if related:
        lines = []
        for r in related:
            title = r["title"] or "Conversation"
            body = r["overview"] or r["snippet"]
            lines.append(f"- {title}: {_bound(body, 600)}" if body != title else f"- {title}")
        parts.append("Related past conversations:\n" + "\n".join(lines))
    return "\n\n".join(parts), [r["id"] for r in related]


def user_chat(conn: Connection, uid: str, app_id: str) -> str:
    """The last messages between the user and this app, oldest first (as in the app's chat)."""
    rows = _CHAT.rows(conn, {"uid": uid, "app_id": app_id})
    return "\n".join(f"{'User' if m.sender == 'user' else 'App'}: {m.text}" for m in reversed(rows))


def build_context(
    conn: Connection, *, uid: str, app_id: str, session_id: str, scopes: Iterable[str]
) -> tuple[dict[str, str], dict[str, Any]]:
    """Values for the given scopes, and notes for the trace (e.g. which conversations were used)."""
    values: dict[str, str] = {}
    notes: dict[str, Any] = {}
    for scope in scopes:
        if scope == "user_name":
            names = _USER_NAME.rows(conn, {"uid": uid})
            values[scope] = (names[0].name if names else None) or ""
        elif scope == "user_facts":
            facts = _USER_FACTS.rows(conn, {"uid": uid})
            values[scope] = "; ".join(f.text.strip().rstrip(";") for f in facts)
        elif scope == "user_context":
            values[scope], notes["related_conversations"] = user_context(conn, uid, session_id)
        elif scope == "user_chat":
            values[scope] = user_chat(conn, uid, app_id)
    bounded = {k: _bound(v, MAX_CHARS[k]) for k, v in values.items()}
    return bounded, notes
