"""Live transcripts in: segments are stored for the session, and its flush is scheduled.

A conversation is keyed by the session id and belongs to one user. Each ingest sets
``flush_due_at`` (if not already set); the dispatcher then sends the new segments to the apps.
``finish`` writes the conversation's transcript (for full-text search), title and overview and
marks it ``finishing``; the dispatcher's next flush sends what is left, fires the
``memory_creation`` webhooks and marks it ``finished``.

Write order matters on PostgreSQL: the conversation row is updated (locked) before segments are
inserted, so per conversation segment ids grow in commit order and a flush never skips one.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from nudge.core.errors import Conflict, Invalid, NotFound
from nudge.proactive.sql import dialect_insert
from nudge.store.models import Conversation, Segment, User

SESSION_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


class SegmentIn(BaseModel):
    """One transcript segment, as Omi sends them (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")
    text: str = Field(min_length=1, max_length=20_000)
    speaker: str = Field(default="SPEAKER_00", min_length=1, max_length=64)
    speaker_id: int | None = Field(default=None, ge=0, le=10_000)
    is_user: bool = False
    start: float = Field(default=0.0, ge=0, le=1e9)
    end: float = Field(default=0.0, ge=0, le=1e9)

    _check_text = field_validator("text", "speaker")(_no_nul)

    def speaker_number(self) -> int:
        if self.speaker_id is not None:
            return self.speaker_id
        digits = re.search(r"(\d+)$", self.speaker)
        return int(digits.group(1)) if digits else 0


class SegmentsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    segments: list[SegmentIn] = Field(min_length=1, max_length=500)


class FinishIn(BaseModel):
    """Optional structured summary; without it a title and overview are taken from the text."""

    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(default=None, max_length=500)
    overview: str | None = Field(default=None, max_length=10_000)


def check_session_id(session_id: str) -> str:
    if not SESSION_RE.match(session_id):
        raise Invalid("session_id: must be 1-128 characters of letters, digits and _ . : @ -")
    return session_id


def speaker_label(speaker: str, is_user: bool) -> str:
    return "User" if is_user else speaker


def transcript_line(text: str, speaker: str, is_user: bool) -> str:
    return f"{speaker_label(speaker, is_user)}: {text}\n"


async def _refuse(conn: AsyncConnection, uid: str, session_id: str) -> None:
    """Explain why a conversation cannot take segments (its row exists but is not ours/live)."""
    row = (
        await conn.execute(
            select(Conversation.uid, Conversation.status).where(Conversation.id == session_id)
        )
    ).first()
    if row is not None and row.uid != uid:
        raise Conflict(f"session_id {session_id!r} is in use by another user: pick a new one")
    raise Conflict(f"session {session_id!r} is finished: start a new session_id")


# Built once: the hot path of ingestion.
_SCHEDULE = (
    update(Conversation)
    .where(
        Conversation.id == bindparam("sid"),
        Conversation.uid == bindparam("b_uid"),
        Conversation.status == "live",
    )
    .values(flush_due_at=func.coalesce(Conversation.flush_due_at, bindparam("now")))
)
_INSERT_SEGMENTS = insert(Segment)


async def ingest_segments(
    conn: AsyncConnection, uid: str, session_id: str, segments: list[SegmentIn]
) -> dict[str, Any]:
    """Store segments of a live session (creating it on first use); schedules its flush."""
    now = time.time()
    # The common case, a live session of this user, is one UPDATE; the user is checked only
    # when the session is new.
    scheduled = await conn.execute(_SCHEDULE, {"sid": session_id, "b_uid": uid, "now": now})
    if scheduled.rowcount == 0:
        if (await conn.execute(select(User.uid).where(User.uid == uid))).first() is None:
            raise NotFound(f"user {uid!r} not found")
        created = await conn.execute(
            dialect_insert(conn)(Conversation)
            .values(
                id=session_id,
                uid=uid,
                status="live",
                title="",
                overview="",
                transcript="",
                created_at=now,
                started_at=now,
                finished_at=None,
                flushed_upto=0,
                flush_due_at=now,
                flush_lease_until=None,
            )
            .on_conflict_do_nothing(index_elements=[Conversation.id])
        )
        if created.rowcount == 0:
            await _refuse(conn, uid, session_id)
    await conn.execute(
        _INSERT_SEGMENTS,
        [
            {
                "conversation_id": session_id,
                "uid": uid,
                "text": s.text,
                "speaker": s.speaker,
                "speaker_id": s.speaker_number(),
                "is_user": s.is_user,
                "start": s.start,
                "end": s.end,
                "created_at": now,
            }
            for s in segments
        ],
    )
    return {"session_id": session_id, "accepted": len(segments)}


def segment_json(row: Any) -> dict[str, Any]:
    """A segment as apps receive it (DESIGN section 2)."""
    return {
        "text": row.text,
        "speaker": row.speaker,
        "speaker_id": row.speaker_id,
        "is_user": row.is_user,
        "start": row.start,
        "end": row.end,
    }


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat()


def conversation_json(conv: Any, segments: list[Any]) -> dict[str, Any]:
    """The conversation object of ``memory_creation`` webhooks (Omi's shape)."""
    return {
        "id": conv.id,
        "created_at": _iso(conv.created_at),
        "started_at": _iso(conv.started_at),
        "finished_at": _iso(conv.finished_at),
        "transcript_segments": [segment_json(s) for s in segments],
        "structured": {"title": conv.title, "overview": conv.overview},
    }


def _sentences(text: str, max_chars: int) -> str:
    out = ""
    for sentence in re.findall(r"[^.!?]+[.!?]*", text):
        candidate = f"{out} {sentence.strip()}".strip()
        if len(candidate) > max_chars:
            break
        out = candidate
    return out or text[: max_chars - 1].rsplit(" ", 1)[0] + "…"


def derive_summary(segments: list[Any]) -> tuple[str, str]:
    """A plain title and overview from the transcript, when the client sent none."""
    text = " ".join(s.text.strip() for s in segments).strip()
    if not text:
        return "Empty conversation", ""
    first = segments[0].text.strip()
    title = first if len(first) <= 60 else first[:59].rsplit(" ", 1)[0] + "…"
    return title, _sentences(text, 500)


async def conversation_segments(conn: AsyncConnection, session_id: str) -> list[Any]:
    return list(
        (
            await conn.execute(
                select(Segment).where(Segment.conversation_id == session_id).order_by(Segment.id)
            )
        ).all()
    )


async def get_conversation(conn: AsyncConnection, uid: str, session_id: str) -> Any:
    row = (
        await conn.execute(
            select(Conversation).where(Conversation.id == session_id, Conversation.uid == uid)
        )
    ).first()
    if row is None:
        raise NotFound(f"session {session_id!r} not found for user {uid!r}")
    return row


async def finish_conversation(
    conn: AsyncConnection, uid: str, session_id: str, summary: FinishIn
) -> dict[str, Any]:
    """End a live session. Its last segments and the ``memory_creation`` webhooks go out with the
    dispatcher's next flush."""
    now = time.time()
    closed = await conn.execute(
        update(Conversation)
        .where(
            Conversation.id == session_id,
            Conversation.uid == uid,
            Conversation.status == "live",
        )
        .values(
            status="finishing",
            finished_at=now,
            flush_due_at=func.coalesce(Conversation.flush_due_at, now),
        )
    )
    if closed.rowcount == 0:
        await get_conversation(conn, uid, session_id)  # 404 when it is not this user's
        raise Conflict(f"session {session_id!r} is already finished")
    segments = await conversation_segments(conn, session_id)
    title, overview = derive_summary(segments)
    # The transcript is written once, now: it is what full-text search indexes (every write
    # re-indexes it, so it is not kept up to date while the session is live; the live part of
    # {{user_context}} reads the segments).
    await conn.execute(
        update(Conversation)
        .where(Conversation.id == session_id)
        .values(
            title=summary.title or title,
            overview=summary.overview or overview,
            transcript="".join(transcript_line(s.text, s.speaker, s.is_user) for s in segments),
        )
    )
    conv = await get_conversation(conn, uid, session_id)
    return conversation_json(conv, segments) | {"status": conv.status}
