"""Conversations imported and read by apps (Omi's integration API; how it differs: docs/omi.md).

An import is stored as a finished conversation of the user, its text as the transcript that
full-text search indexes (the past conversations of ``{{user_context}}`` include it from then on);
it then finishes like a live one (:func:`nudge.proactive.ingest.queue_memory_webhooks`). Reads
answer with Omi's ``ConversationItem``, newest first."""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from datetime import UTC, date, datetime
from datetime import time as clock
from functools import partial
from types import SimpleNamespace
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Connection

from nudge.core.notifications import RateLimit
from nudge.errors import Invalid
from nudge.integrations.access import Limiting, authorize, limited
from nudge.integrations.limits import Policy
from nudge.proactive.conversation import (
    IMPORTED_SOURCE,
    OMI_STATUS,
    GeolocationIn,
    conversation_json,
    conversation_row,
    iso,
)
from nudge.proactive.ingest import Dispatch, queue_memory_webhooks
from nudge.proactive.segments import SegmentIn, derive_summary, transcript_line
from nudge.sdk.models import ConversationItem, SearchConversationsResponse
from nudge.store import conversations as sql
from nudge.text import Line, Text

TEXT_MAX_CHARS = 100_000
MAX_SEGMENTS = 5_000
DEFAULT_LENGTH_S = 300.0  # Omi: finished_at defaults to started_at + 5 minutes
SEARCH_MAX_WORDS = 20
MAX_PAGE = 1_000_000  # Omi clamps only from below; a larger page would overflow the offset
_WORD = re.compile(r"\w+")
# The times an import may carry (their UNIX seconds render back as dates, with room for +5 min).
_EARLIEST = datetime(1900, 1, 1, tzinfo=UTC).timestamp()
_LATEST = datetime(2999, 12, 31, tzinfo=UTC).timestamp()
_FROM_OMI_STATUS = {omi: ours for ours, omi in OMI_STATUS.items()}


class Importing(Limiting, Protocol):
    @property
    def dispatcher(self) -> Dispatch | None: ...


# --- Omi's request and answer shapes ---------------------------------------------------------


class CreateConversation(BaseModel):
    """Omi's ``ExternalIntegrationCreateConversation``; ``transcript_segments`` may stand in for
    (or come with) ``text``."""

    model_config = ConfigDict(extra="ignore")
    text: Text | None = Field(default=None, max_length=TEXT_MAX_CHARS)
    transcript_segments: list[SegmentIn] | None = Field(default=None, max_length=MAX_SEGMENTS)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    text_source: Literal["audio_transcript", "message", "other_text"] = "audio_transcript"
    text_source_spec: Line | None = Field(default=None, max_length=200)
    language: Line | None = Field(default=None, max_length=20)
    geolocation: GeolocationIn | None = None

    @model_validator(mode="after")
    def _content_and_times(self) -> CreateConversation:
        if not (self.text or "").strip() and not self.transcript_segments:
            raise ValueError(
                "text or transcript_segments: the conversation's text or its segments are required"
            )
        for name in ("started_at", "finished_at"):
            value = getattr(self, name)
            if value is not None and not _EARLIEST <= _ts(value) <= _LATEST:
                raise ValueError(f"{name}: must be a time between the years 1900 and 2999")
        if self.started_at and self.finished_at and _ts(self.finished_at) < _ts(self.started_at):
            raise ValueError("finished_at: must not be before started_at")
        return self


class SearchRequest(BaseModel):
    """Omi's ``SearchRequest``; ``page`` and ``per_page`` are clamped as Omi clamps them."""

    model_config = ConfigDict(extra="ignore")
    query: Text = Field(default="", max_length=1000)
    page: int | None = 1
    per_page: int | None = 10
    include_discarded: bool | None = True
    start_date: Line | None = Field(default=None, max_length=40)
    end_date: Line | None = Field(default=None, max_length=40)


# --- Times ---------------------------------------------------------------------------------


def _ts(value: datetime) -> float:
    """UNIX seconds; a time without a zone is UTC (as Omi stores them)."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def parse_date(value: str | None, field: str, *, end: bool) -> float | None:
    """Omi's date filters: ``YYYY-MM-DD`` (the whole day, UTC) or ISO 8601; a 422 otherwise."""
    if value is None or not value.strip():
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return _ts(datetime.combine(day, clock.max if end else clock.min, tzinfo=UTC))
        return _ts(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        raise Invalid(
            f"{field}: not a date; use ISO 8601 (2024-07-21T22:34:43Z) or YYYY-MM-DD"
        ) from None


# --- Import ----------------------------------------------------------------------------------


def _external_data(body: CreateConversation, app_id: str, started: float, finished: float) -> Any:
    """The request, kept as Omi keeps it (its ``external_data`` is the create payload)."""
    kept = body.model_dump(mode="json", exclude={"transcript_segments"})
    return kept | {
        "started_at": iso(started),
        "finished_at": iso(finished),
        "language": body.language or "en",
        "source": IMPORTED_SOURCE,
        "app_id": app_id,
    }


def store_imported(conn: Connection, uid: str, app_id: str, body: CreateConversation) -> str:
    """Write the conversation and its segments, and queue its memory webhooks; its id."""
    now = time.time()
    started = _ts(body.started_at) if body.started_at else now
    finished = _ts(body.finished_at) if body.finished_at else started + DEFAULT_LENGTH_S
    segments = body.transcript_segments or []
    words = (body.text or "").strip()
    lines = [SimpleNamespace(text=line) for line in words.splitlines() if line.strip()]
    title, overview = derive_summary(segments or lines)
    transcript = (words + "\n" if words else "") + "".join(
        transcript_line(s.text, s.speaker, s.is_user) for s in segments
    )
    row = conversation_row(
        uid=uid,
        status="finished",
        source=IMPORTED_SOURCE,
        language=body.language or "en",
        geolocation=body.geolocation.model_dump() if body.geolocation else None,
        external_data=_external_data(body, app_id, started, finished),
        app_id=app_id,
        title=title,
        overview=overview,
        summary_pending=True,  # the LLM writes them, as Omi's processing of an import
        transcript=transcript,
        created_at=started,  # as Omi: an import is dated when it started
        started_at=started,
        finished_at=finished,
    )
    conversation_id = row["id"]
    sql.insert_conversation(conn, row)
    if segments:
        sql.insert_segments(conn, [s.row(conversation_id, uid, now) for s in segments])
    queue_memory_webhooks(conn, conversation_id)
    return conversation_id


async def import_conversation(
    platform: Importing, authorization: str | None, app_id: str, uid: str, body: CreateConversation
) -> tuple[ConversationItem, RateLimit]:
    """``POST /v2/integrations/{app_id}/user/conversations``."""
    limit = platform.settings.integration_conversations_per_hour
    policy = Policy("integration:conversations", limit)
    async with limited(platform, authorization, app_id, uid, "create_conversation", policy) as rate:
        conversation_id = await platform.db.write_alone(
            lambda conn: store_imported(conn, uid, app_id, body)
        )
        if platform.dispatcher is not None:  # else a worker process's dispatcher finds it
            platform.dispatcher.wake(conversation_id)
        (item,) = await platform.db.query(partial(_items, ids=[conversation_id], max_segments=-1))
        return item, rate


# --- Reads ---------------------------------------------------------------------------------


def _items(conn: Connection, ids: list[str], *, max_segments: int) -> list[ConversationItem]:
    """The conversations ``ids`` in that order, each with its first ``max_segments`` segments
    (-1: all), as Omi's ``ConversationItem``."""
    if not ids:
        return []
    rows = sql.conversations_by_id(conn, ids)
    segments: dict[str, list[Any]] = defaultdict(list)
    for s in sql.first_segments(conn, ids, max_segments) if max_segments != 0 else []:
        segments[s.conversation_id].append(s)
    return [
        ConversationItem.model_validate(conversation_json(rows[i], segments[i]))
        for i in ids
        if i in rows
    ]


def _statuses(statuses: list[str] | None) -> list[str] | None:
    """Omi's status names as Nudge's; one Nudge has no state for matches nothing."""
    return [_FROM_OMI_STATUS.get(s, "") for s in statuses] if statuses else None


def conversations_of(
    conn: Connection,
    uid: str,
    *,
    limit: int,
    offset: int = 0,
    max_segments: int = 100,
    statuses: list[str] | None = None,
    **filters: Any,
) -> list[ConversationItem]:
    """The user's conversations, newest first (``filters``: include_discarded, start, end)."""
    ids = sql.page_ids(conn, uid, limit, offset, statuses=_statuses(statuses), **filters)
    return _items(conn, ids, max_segments=max_segments)


async def read_conversations(
    platform: Limiting,
    authorization: str | None,
    app_id: str,
    uid: str,
    *,
    start_date: str | None,
    end_date: str | None,
    **page: Any,
) -> list[ConversationItem]:
    """``GET /v2/integrations/{app_id}/conversations``; ``page`` as :func:`conversations_of`
    takes it (limit, offset, max_segments, statuses, include_discarded)."""

    def read(conn: Connection) -> list[ConversationItem]:
        authorize(conn, authorization, app_id, uid, "read_conversations")
        start = parse_date(start_date, "start_date", end=False)
        end = parse_date(end_date, "end_date", end=True)
        return conversations_of(conn, uid, start=start, end=end, **page)

    return await platform.db.query(read)


async def search_conversations(
    platform: Limiting,
    authorization: str | None,
    app_id: str,
    uid: str,
    body: SearchRequest,
    max_segments: int,
) -> SearchConversationsResponse:
    """``POST /v2/integrations/{app_id}/search/conversations``: newest first, as Omi sorts."""
    page = min(max(1, body.page or 1), MAX_PAGE)
    per_page = max(1, min(body.per_page or 10, 250))
    words = _WORD.findall(body.query.lower())[:SEARCH_MAX_WORDS]

    def search(conn: Connection) -> SearchConversationsResponse:
        authorize(conn, authorization, app_id, uid, "read_conversations")
        start = parse_date(body.start_date, "start_date", end=False)
        end = parse_date(body.end_date, "end_date", end=True)
        if not words and start is None and end is None:  # as Omi: nothing asked, nothing found
            return SearchConversationsResponse(
                conversations=[], total_pages=page, current_page=page, per_page=per_page
            )
        include = True if body.include_discarded is None else body.include_discarded
        where = {"include_discarded": include, "start": start, "end": end, "words": words}
        total = sql.count(conn, uid, **where)
        ids = sql.page_ids(conn, uid, per_page, (page - 1) * per_page, **where)
        return SearchConversationsResponse(
            conversations=_items(conn, ids, max_segments=max_segments),
            total_pages=max(math.ceil(total / per_page), 1),
            current_page=page,
            per_page=per_page,
        )

    return await platform.db.query(search)
