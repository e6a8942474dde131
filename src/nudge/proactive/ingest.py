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

import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, bindparam, func, select, update

from nudge.core.errors import Conflict, Invalid, NotFound, NudgeError
from nudge.core.users import user_token_refusal
from nudge.proactive.sql import dialect_insert
from nudge.store.batch import RequestBatcher
from nudge.store.db import Database
from nudge.store.fast import Statement, insert_statement
from nudge.store.models import Conversation, Segment, User
from nudge.text import Line, Text

log = logging.getLogger("nudge.ingest")

SESSION_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


class SegmentIn(BaseModel):
    """One transcript segment, as Omi sends them (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")
    text: Text = Field(min_length=1, max_length=20_000)
    speaker: Line = Field(default="SPEAKER_00", min_length=1, max_length=64)
    speaker_id: int | None = Field(default=None, ge=0, le=10_000)
    is_user: bool = False
    start: float = Field(default=0.0, ge=0, le=1e9)
    end: float = Field(default=0.0, ge=0, le=1e9)

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
    title: Line | None = Field(default=None, max_length=500)
    overview: Text | None = Field(default=None, max_length=10_000)


def check_session_id(session_id: str) -> str:
    if not SESSION_RE.match(session_id):
        raise Invalid("session_id: must be 1-128 characters of letters, digits and _ . : @ -")
    return session_id


def speaker_label(speaker: str, is_user: bool) -> str:
    return "User" if is_user else speaker


def transcript_line(text: str, speaker: str, is_user: bool) -> str:
    return f"{speaker_label(speaker, is_user)}: {text}\n"


# Built once: the hot path of ingestion. ``id IN (...) AND uid IN (...)``, not the row value
# ``(id, uid) IN (...)``, which SQLite answers by scanning every conversation ever stored. The
# extra combinations it allows (a session id sent by a user who does not own it, in the same batch
# as its owner) at most schedule a flush of the owner's live session, which finds nothing new.
_SCHEDULE = Statement(
    update(Conversation)
    .where(
        Conversation.id.in_(bindparam("ids", expanding=True)),
        Conversation.uid.in_(bindparam("uids", expanding=True)),
        Conversation.status == "live",
    )
    .values(flush_due_at=func.coalesce(Conversation.flush_due_at, bindparam("now")))
    .returning(Conversation.id, Conversation.uid)
)
_INSERT_SEGMENTS = insert_statement(
    Segment,
    [
        "conversation_id",
        "uid",
        "text",
        "speaker",
        "speaker_id",
        "is_user",
        "start",
        "end",
        "created_at",
    ],
)

_TOKEN_OWNERS = Statement(
    select(User.token_hash, User.uid).where(
        User.token_hash.in_(bindparam("hashes", expanding=True))
    )
)


@dataclass(frozen=True)
class IngestRequest:
    uid: str
    session_id: str
    segments: list[SegmentIn]
    token_hash: str | None = None  # a user token to check in the batch; None: checked already


def _token_refusals(conn: Connection, requests: list[IngestRequest]) -> dict[int, NudgeError]:
    """Requests whose user token is unknown or another user's (as ``authenticate_user``)."""
    hashes = {r.token_hash for r in requests if r.token_hash is not None}
    if not hashes:
        return {}
    found = _TOKEN_OWNERS.rows(conn, {"hashes": list(hashes)})
    owners = {r.token_hash: r.uid for r in found}
    refused: dict[int, NudgeError] = {}
    for i, r in enumerate(requests):
        if r.token_hash is not None:
            refusal = user_token_refusal(owners.get(r.token_hash), r.uid)
            if refusal is not None:
                refused[i] = refusal
    return refused


def _open_sessions(
    conn: Connection, pairs: list[tuple[str, str]], now: float
) -> dict[tuple[str, str], NudgeError]:
    """Create the sessions that do not exist yet; why each of the others cannot take segments."""
    uids = {uid for _, uid in pairs}
    users = set(conn.execute(select(User.uid).where(User.uid.in_(uids))).scalars())
    refused: dict[tuple[str, str], NudgeError] = {
        (sid, uid): NotFound(f"user {uid!r} not found") for sid, uid in pairs if uid not in users
    }
    wanted: dict[str, str] = {}
    for sid, uid in pairs:  # a new id asked for by two users: the first request gets it
        if uid in users:
            wanted.setdefault(sid, uid)
    created = _create_each(conn, wanted, now) if wanted else set()
    leftover = {(sid, uid) for sid, uid in pairs if (sid, uid) not in refused}
    leftover -= {(sid, wanted[sid]) for sid in created}
    if leftover:
        owners = {
            r.id: r.uid
            for r in conn.execute(
                select(Conversation.id, Conversation.uid).where(
                    Conversation.id.in_({sid for sid, _ in leftover})
                )
            )
        }
        for sid, uid in leftover:
            if owners.get(sid) not in (None, uid):
                refused[(sid, uid)] = Conflict(
                    f"session_id {sid!r} is in use by another user: pick a new one"
                )
            else:
                refused[(sid, uid)] = Conflict(
                    f"session {sid!r} is finished: start a new session_id"
                )
    return refused


def _new_conversation(session_id: str, uid: str, now: float) -> dict[str, Any]:
    return {
        "id": session_id,
        "uid": uid,
        "session_id": session_id,
        "status": "live",
        "title": "",
        "overview": "",
        "transcript": "",
        "created_at": now,
        "started_at": now,
        "finished_at": None,
        "flushed_upto": 0,
        "flush_due_at": now,
        "flush_lease_until": None,
    }


def _create_each(conn: Connection, wanted: dict[str, str], now: float) -> set[str]:
    """Multi-row ``INSERT … ON CONFLICT DO NOTHING RETURNING``: the ids actually created."""
    insert_new = dialect_insert(conn)(Conversation).values(
        [_new_conversation(sid, uid, now) for sid, uid in wanted.items()]
    )
    returned = conn.execute(
        insert_new.on_conflict_do_nothing(index_elements=[Conversation.id]).returning(
            Conversation.id
        )
    )
    return set(returned.scalars())


def ingest_batch(
    conn: Connection, requests: list[IngestRequest]
) -> list[dict[str, Any] | NudgeError]:
    """Store the segments of many requests with a fixed handful of statements; one result (or
    refusal) per request, in order. User tokens are checked first; sessions are created on first
    use; each touched session's flush is scheduled."""
    denied = _token_refusals(conn, requests)
    allowed = [r for i, r in enumerate(requests) if i not in denied]
    stored = iter(_store(conn, allowed) if allowed else [])
    return [denied[i] if i in denied else next(stored) for i in range(len(requests))]


def _store(conn: Connection, requests: list[IngestRequest]) -> list[dict[str, Any] | NudgeError]:
    now = time.time()
    pairs = list(dict.fromkeys((r.session_id, r.uid) for r in requests))  # in request order
    scheduled = _SCHEDULE.rows(
        conn,
        {
            "ids": list({sid for sid, _ in pairs}),
            "uids": list({uid for _, uid in pairs}),
            "now": now,
        },
    )
    live = {(r.id, r.uid) for r in scheduled} & set(pairs)
    waiting = [pair for pair in pairs if pair not in live]
    refused = _open_sessions(conn, waiting, now) if waiting else {}
    rows = [
        {
            "conversation_id": r.session_id,
            "uid": r.uid,
            "text": s.text,
            "speaker": s.speaker,
            "speaker_id": s.speaker_number(),
            "is_user": s.is_user,
            "start": s.start,
            "end": s.end,
            "created_at": now,
        }
        for r in requests
        if (r.session_id, r.uid) not in refused
        for s in r.segments
    ]
    if rows:
        _INSERT_SEGMENTS.run_many(conn, rows)
    return [
        refused.get((r.session_id, r.uid))
        or {"session_id": r.session_id, "accepted": len(r.segments)}
        for r in requests
    ]


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


def conversation_segments(conn: Connection, session_id: str) -> list[Any]:
    return list(
        conn.execute(
            select(Segment).where(Segment.conversation_id == session_id).order_by(Segment.id)
        ).all()
    )


def get_conversation(conn: Connection, uid: str, session_id: str) -> Any:
    row = conn.execute(
        select(Conversation).where(Conversation.id == session_id, Conversation.uid == uid)
    ).first()
    if row is None:
        raise NotFound(f"session {session_id!r} not found for user {uid!r}")
    return row


def finish_conversation(
    conn: Connection, uid: str, session_id: str, summary: FinishIn
) -> dict[str, Any]:
    """End a live session. Its last segments and the ``memory_creation`` webhooks go out with the
    dispatcher's next flush."""
    now = time.time()
    closed = conn.execute(
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
        get_conversation(conn, uid, session_id)  # 404 when it is not this user's
        raise Conflict(f"session {session_id!r} is already finished")
    segments = conversation_segments(conn, session_id)
    title, overview = derive_summary(segments)
    # The transcript is written once, now: it is what full-text search indexes (every write
    # re-indexes it, so it is not kept up to date while the session is live; the live part of
    # {{user_context}} reads the segments).
    conn.execute(
        update(Conversation)
        .where(Conversation.id == session_id)
        .values(
            title=summary.title or title,
            overview=summary.overview or overview,
            transcript="".join(transcript_line(s.text, s.speaker, s.is_user) for s in segments),
        )
    )
    conv = get_conversation(conn, uid, session_id)
    return conversation_json(conv, segments) | {"status": conv.status}


class Dispatch(Protocol):
    """What ingestion needs from the local dispatcher (see ``nudge.proactive.dispatcher``)."""

    def claim_now(self, conn: Connection, session_ids: list[str]) -> list[Any]: ...

    def start(self, flushes: list[Any]) -> None: ...

    def wake(self, session_id: str | None = None) -> None: ...


class Ingestor:
    """Stores segments from concurrent requests in batches.

    While one batch is written, new requests queue up and form the next: each batch is one
    transaction with a fixed handful of statements (:func:`ingest_batch`), plus, in a process that
    dispatches, the flush of those sessions whose window is open. Callers are answered once their
    segments are committed. The batch is its own transaction, on SQLite run on the event loop
    when the write lock is free (``Database.run_in_transaction(on_loop=True)``): a second round of
    batching in the shared writer would only add event-loop turns and a thread trip to every
    segment's way to the webhooks.
    """

    def __init__(self, db: Database, dispatch: Dispatch | None, max_batch: int) -> None:
        self.db = db
        self.dispatch = dispatch
        self._batcher: RequestBatcher[IngestRequest, dict[str, Any] | NudgeError] = RequestBatcher(
            self._process, max_batch=max_batch, name="nudge-ingestor"
        )

    def start(self) -> None:
        self._batcher.start()

    async def aclose(self) -> None:
        await self._batcher.aclose()

    async def store(
        self,
        uid: str,
        session_id: str,
        segments: list[SegmentIn],
        *,
        token_hash: str | None = None,
    ) -> dict[str, Any]:
        """Durably store segments; raises the request's refusal (a ``NudgeError``). With
        ``token_hash``, the request carries a user token that the batch checks (one query for
        all of them) instead of the caller reading it first."""
        check_session_id(session_id)
        result = await self._batcher.submit(IngestRequest(uid, session_id, segments, token_hash))
        if isinstance(result, NudgeError):
            raise result
        return result

    async def _process(self, requests: list[IngestRequest]) -> list[dict[str, Any] | NudgeError]:
        results, flushes = await self.db.run_in_transaction(
            partial(self._work, requests), on_loop=True
        )
        self._after(results, flushes, [r.session_id for r in requests])
        return results

    def _work(
        self, requests: list[IngestRequest], conn: Connection
    ) -> tuple[list[dict[str, Any] | NudgeError], list[Any]]:
        results = ingest_batch(conn, requests)
        stored = list(
            dict.fromkeys(
                r.session_id for r, res in zip(requests, results) if isinstance(res, dict)
            )
        )
        flushes = self.dispatch.claim_now(conn, stored) if self.dispatch and stored else []
        return results, flushes

    def _after(self, results: list[Any], flushes: list[Any], session_ids: list[str]) -> None:
        if self.dispatch is None:
            return
        self.dispatch.start(flushes)
        flushed = {f.session_id for f in flushes}
        for sid, result in zip(session_ids, results):
            if isinstance(result, dict) and sid not in flushed:
                self.dispatch.wake(sid)
