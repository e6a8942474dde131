"""The user's data behind the four scopes, read only for the scopes that count.

``user_context`` is the user's past conversations relevant to the live one, found by full-text
search as Omi fills it (docs/proactive.md, docs/omi.md), not the live transcript: the app has it
already. Each value is bounded so that a long history cannot crowd out the app's prompt. The reads
are synchronous: the pipeline runs them with the install check and the rate claim as one unit of
work (``nudge.proactive.pipeline.claim_and_read``)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from nudge.proactive.conversation import DEFAULT_CATEGORY
from nudge.store import context as sql
from nudge.text import keywords

MAX_CHARS = {"user_name": 200, "user_facts": 4000, "user_context": 6000, "user_chat": 4000}
LIVE_SEGMENTS = 30
QUOTED_SEGMENTS = 200  # the live conversation's lines an app's prompt may quote (see live_lines)
RELATED = 5  # past conversations, as many as Omi's retrieval gives
CHAT_MESSAGES = 10


def _bound(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class Steering:
    """An answer's ``notification.context``: what to look for in the past conversations."""

    question: str = ""
    people: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    dates: tuple[date, ...] = ()
    ignored_dates: tuple[str, ...] = ()  # not dates: left out, as Omi ignores the filter

    @property
    def required(self) -> tuple[str, ...]:
        """A conversation must mention one of these (Omi: people OR topics OR entities)."""
        return tuple(dict.fromkeys((*self.people, *self.topics, *self.entities)))


STEERING_ITEMS = 20  # per filter; the rest are ignored
STEERING_CHARS = 200  # per item
QUESTION_CHARS = 2000


def _strings(value: Any, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{path}: must be a list of strings")
    items = (" ".join(v.split())[:STEERING_CHARS] for v in value[:STEERING_ITEMS])
    return tuple(dict.fromkeys(v for v in items if v))


def _day(value: str) -> date | None:
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).date()
    except ValueError:
        return None


def parse_steering(value: Any) -> Steering | None:
    """``notification.context`` as Omi's apps send it; raises ``ValueError`` naming the field."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("notification.context: must be an object with 'question' and 'filters'")
    question = value.get("question") or ""
    if not isinstance(question, str):
        raise ValueError("notification.context.question: must be a string")
    filters, path = value.get("filters") or {}, "notification.context.filters"
    if not isinstance(filters, dict):
        raise ValueError(f"{path}: must be an object (people, topics, entities, dates)")
    raw_dates = _strings(filters.get("dates"), f"{path}.dates")
    days = {d: _day(d) for d in raw_dates}
    return Steering(
        question=question.strip()[:QUESTION_CHARS],
        people=_strings(filters.get("people"), f"{path}.people"),
        topics=_strings(filters.get("topics"), f"{path}.topics"),
        entities=_strings(filters.get("entities"), f"{path}.entities"),
        dates=tuple(dict.fromkeys(d for d in days.values() if d is not None)),
        ignored_dates=tuple(raw for raw, d in days.items() if d is None),
    )


def live_words(conn: Connection, conversation_id: str) -> list[str]:
    """The live conversation's most frequent content words (of its last segments)."""
    return keywords(" ".join(sql.last_segment_texts(conn, conversation_id, LIVE_SEGMENTS)))


def live_lines(conn: Connection, conversation_id: str) -> list[str]:
    """The live conversation's last segment texts: the app has them, and where its prompt quotes
    them the filler fences them as user data (``nudge.proactive.filler.fill``'s ``live``)."""
    return sql.last_segment_texts(conn, conversation_id, QUOTED_SEGMENTS) if conversation_id else []


def _any_of(terms: Iterable[str], postgres: bool) -> str:
    """Each term a quoted phrase, any of them: for ``websearch_to_tsquery`` or for FTS5."""
    if postgres:
        return " or ".join('"{}"'.format(t.replace('"', " ")) for t in terms)
    return " OR ".join('"{}"'.format(t.replace('"', '""')) for t in terms)


def _past_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "title": row.title,
        "overview": row.overview,
        "category": row.category or DEFAULT_CATEGORY,
        "action_items": row.action_items or [],
        "events": row.events or [],
        "created_at": row.created_at,
        "started_at": row.started_at,
        "snippet": re.sub(r"\s+", " ", row.snippet or "").strip(),
    }


def _day_range(days: tuple[date, ...]) -> tuple[float, float]:
    if not days:
        return 0.0, 1e12
    start = datetime.combine(min(days), datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(max(days) + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return start.timestamp(), end.timestamp()


def _on_days(found: list[dict[str, Any]], days: tuple[date, ...]) -> list[dict[str, Any]]:
    if not days:
        return found
    return [r for r in found if datetime.fromtimestamp(r["started_at"], UTC).date() in days]


def related_conversations(
    conn: Connection,
    uid: str,
    exclude_id: str,
    words: list[str],
    *,
    required: tuple[str, ...] = (),
    days: tuple[date, ...] = (),
    limit: int = RELATED,
) -> list[dict[str, Any]]:
    """The user's past conversations that best match ``words`` (full-text, best first). With
    ``required``, only those mentioning one of them (ranked by ``words`` where any match, then
    the others); with ``days``, only those started on one of those days (UTC)."""
    if not words and not required:
        return []
    postgres = conn.dialect.name == "postgresql"  # the two spell full-text queries apart
    since, until = _day_range(days)
    fetch = limit * 8 if days else limit  # the range is narrowed to the exact days below
    params: dict[str, Any] = {"uid": uid, "cid": exclude_id, "n": fetch, "since": since}
    params["until"] = until
    found: list[dict[str, Any]] = []
    if words:
        params |= {"q": _any_of(words, postgres), "req": _any_of(required, postgres)}
        if required and not postgres:  # FTS5: one query string carries both
            params["q"] = f"({params['req']}) AND ({params['q']})"
        rows = sql.search_past(conn, params, required=bool(required))
        found = _on_days([_past_json(r) for r in rows], days)
    if required and len(found) < limit:
        params["q"] = _any_of(required, postgres)
        seen = {r["id"] for r in found}
        rows = sql.search_past(conn, params)
        found += [r for r in _on_days([_past_json(r) for r in rows], days) if r["id"] not in seen]
    return found[:limit]


def recent_conversations(
    conn: Connection,
    uid: str,
    exclude_id: str,
    *,
    days: tuple[date, ...] = (),
    limit: int = RELATED,
) -> list[dict[str, Any]]:
    """The user's most recent past conversations (on ``days``, when given)."""
    since, until = _day_range(days)
    params = {"uid": uid, "cid": exclude_id, "since": since, "until": until}
    rows = sql.recent_past(conn, params | {"n": limit * 8 if days else limit})
    return _on_days([_past_json(r) for r in rows], days)[:limit]


def render_conversations(past: list[dict[str, Any]]) -> str:
    """As Omi writes conversations into a prompt: numbered, dated, titled, summarised."""
    parts = []
    for i, r in enumerate(past, 1):
        when = datetime.fromtimestamp(r["created_at"], UTC).strftime("%d %b %Y at %H:%M UTC")
        lines = [f"Conversation #{i}", f"{when} ({r['category'].capitalize()})"]
        title = r["title"] or "Conversation"
        lines.append(title)
        body = r["overview"] or r["snippet"]
        if body and body != title:
            lines.append(_bound(body, 600))
        items = [a.get("description") for a in r["action_items"] if isinstance(a, dict)]
        if any(items):
            lines += ["Action Items:", *(f"- {d}" for d in items if d)]
        events = [e.get("title") for e in r["events"] if isinstance(e, dict)]
        if any(events):
            lines += ["Events:", *(f"- {t}" for t in events if t)]
        parts.append("\n".join(lines))
    return "\n\n---------------------\n\n".join(parts)


def user_context(
    conn: Connection, uid: str, conversation_id: str, steering: Steering | None = None
) -> tuple[str, dict[str, Any]]:
    """The text for ``{{user_context}}`` and, for the trace, how it was found."""
    steering = steering or Steering()
    source = "question" if steering.question else "live conversation"
    words = keywords(steering.question) if steering.question else live_words(conn, conversation_id)
    required, days = steering.required, steering.dates
    past = related_conversations(conn, uid, conversation_id, words, required=required, days=days)
    fallback = not past and not required
    if fallback:
        past = recent_conversations(conn, uid, conversation_id, days=days)
    notes: dict[str, Any] = {
        "words_from": source,
        "words": words,
        "required": list(required),
        "dates": [d.isoformat() for d in days],
        "found_by": "most recent" if fallback else "full-text search",
    }
    if steering.ignored_dates:
        notes["ignored_dates"] = list(steering.ignored_dates)
    notes["conversations"] = [r["id"] for r in past]
    return render_conversations(past), notes


def user_chat(conn: Connection, uid: str, app_id: str) -> str:
    """The last messages between the user and this app, oldest first (as in the app's chat)."""
    rows = sql.last_chat(conn, uid, app_id, CHAT_MESSAGES)
    return "\n".join(f"{'User' if m.sender == 'user' else 'App'}: {m.text}" for m in reversed(rows))


def build_context(
    conn: Connection,
    *,
    uid: str,
    app_id: str,
    conversation_id: str,
    scopes: Iterable[str],
    steering: Steering | None = None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Values for the given scopes, and notes for the trace (how ``{{user_context}}`` was
    found, under ``user_context``)."""
    values: dict[str, str] = {}
    notes: dict[str, Any] = {}
    for scope in scopes:
        if scope == "user_name":
            values[scope] = sql.user_name(conn, uid) or ""
        elif scope == "user_facts":
            facts = sql.fact_texts(conn, uid)
            values[scope] = "; ".join(f.strip().rstrip(";") for f in facts)
        elif scope == "user_context":
            values[scope], notes[scope] = user_context(conn, uid, conversation_id, steering)
        elif scope == "user_chat":
            values[scope] = user_chat(conn, uid, app_id)
    bounded = {k: _bound(v, MAX_CHARS[k]) for k, v in values.items()}
    return bounded, notes
