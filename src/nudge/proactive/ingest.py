"""Live transcripts in: segments are stored in the session's live conversation, and its flush is
scheduled.

A session (``uid``, ``session_id``) is the client's stream; a conversation is one stretch of it
with its own id. The first segment of a session (or the first after its conversation ended) opens
a new conversation; Omi's clients stream every conversation under one session id (the uid). Each
ingest sets ``flush_due_at`` (if not already set) and pushes ``silence_due_at`` forward; the
dispatcher then sends the new segments to the apps.

A conversation ends on ``finish`` or after ``NUDGE_CONVERSATION_SILENCE_S`` without a segment
(the dispatcher claims ``silence_due_at`` across processes, :func:`finish_silent`). Ending one
writes its transcript (for full-text search), a plain title and overview (the LLM may replace
them, see ``nudge.proactive.summary``) and marks it ``finishing``; the dispatcher's next flush
sends what is left, fires the ``memory_creation`` webhooks and marks it ``finished``. A
conversation stored whole (Omi's integration API) fires them through
:func:`queue_memory_webhooks`.

Write order matters on PostgreSQL: the conversation row is updated (locked) before segments are
inserted, so per conversation segment ids grow in commit order and a flush never skips one.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, and_, bindparam, func, literal_column, select, update

from nudge.core.users import user_token_refusal
from nudge.errors import Conflict, Invalid, NotFound, NudgeError
from nudge.proactive.conversation import (
    DEFAULT_CATEGORY,
    DEFAULT_EMOJI,
    LIVE_SOURCE,
    GeolocationIn,
    conversation_json,
)
from nudge.proactive.sql import claimable, dialect_insert
from nudge.store.batch import RequestBatcher
from nudge.store.db import Database
from nudge.store.fast import Statement, insert_statement
from nudge.store.models import Conversation, Segment, User
from nudge.text import Line, Text

log = logging.getLogger("nudge.ingest")

SESSION_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
DEFAULT_SILENCE_S = 120.0
# The status of live conversations, written into statements as a literal: the partial indexes
# that hold only live rows are usable (SQLite cannot match a bound parameter to them).
LIVE: Any = literal_column("'live'")


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

    def row(self, conversation_id: str, uid: str, now: float) -> dict[str, Any]:
        """The ``segments`` row that stores it."""
        return {
            "conversation_id": conversation_id,
            "uid": uid,
            "text": self.text,
            "speaker": self.speaker,
            "speaker_id": self.speaker_number(),
            "is_user": self.is_user,
            "start": self.start,
            "end": self.end,
            "created_at": now,
        }


class SegmentsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    segments: list[SegmentIn] = Field(min_length=1, max_length=500)


class FinishIn(BaseModel):
    """Optional details of the conversation; without a title and overview, plain ones are taken
    from the text (and the LLM may write better ones, see ``nudge.proactive.summary``)."""

    model_config = ConfigDict(extra="forbid")
    title: Line | None = Field(default=None, max_length=500)
    overview: Text | None = Field(default=None, max_length=10_000)
    language: Line | None = Field(default=None, min_length=2, max_length=20)
    geolocation: GeolocationIn | None = None


def check_session_id(session_id: str) -> str:
    if not SESSION_RE.match(session_id):
        raise Invalid("session_id: must be 1-128 characters of letters, digits and _ . : @ -")
    return session_id


def speaker_label(speaker: str, is_user: bool) -> str:
    return "User" if is_user else speaker


def transcript_line(text: str, speaker: str, is_user: bool) -> str:
    return f"{speaker_label(speaker, is_user)}: {text}\n"


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
    .returning(Conversation.id, Conversation.session_id, Conversation.uid)
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

Pair = tuple[str, str]  # (session_id, uid)


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


def _schedule(
    conn: Connection, pairs: list[Pair], now: float, silent_at: float | None
) -> dict[Pair, str]:
    """Schedule the flush of the live conversations of these sessions (and push their silence
    deadline); their ids."""
    rows = _SCHEDULE.rows(
        conn,
        {
            "sids": list({sid for sid, _ in pairs}),
            "uids": list({uid for _, uid in pairs}),
            "now": now,
            "silent_at": silent_at,
        },
    )
    wanted = set(pairs)
    return {(r.session_id, r.uid): r.id for r in rows if (r.session_id, r.uid) in wanted}


def new_conversation_id() -> str:
    """Omi's conversation ids are UUIDs."""
    return str(uuid.uuid4())


def _new_conversation(session_id: str, uid: str, now: float, silent_at: float | None) -> Any:
    return {
        "id": new_conversation_id(),
        "uid": uid,
        "session_id": session_id,
        "status": "live",
        "source": LIVE_SOURCE,
        "language": None,
        "geolocation": None,
        "external_data": None,
        "discarded": False,
        "app_id": None,
        "title": "",
        "overview": "",
        "emoji": DEFAULT_EMOJI,
        "category": DEFAULT_CATEGORY,
        "action_items": [],
        "events": [],
        "summary_pending": False,
        "transcript": "",
        "created_at": now,
        "started_at": now,
        "finished_at": None,
        "silence_due_at": silent_at,
        "flushed_upto": 0,
        "flush_due_at": now,
        "flush_lease_until": None,
    }


def _open_conversations(
    conn: Connection, pairs: list[Pair], now: float, silent_at: float | None
) -> tuple[dict[Pair, str], dict[Pair, NudgeError]]:
    """Open a conversation for each session that has no live one; why the others cannot."""
    uids = {uid for _, uid in pairs}
    users = set(conn.execute(select(User.uid).where(User.uid.in_(uids))).scalars())
    refused: dict[Pair, NudgeError] = {
        (sid, uid): NotFound(f"user {uid!r} not found") for sid, uid in pairs if uid not in users
    }
    wanted = [pair for pair in pairs if pair not in refused]
    if not wanted:
        return {}, refused
    # ``ON CONFLICT DO NOTHING`` on the live-session index: a conversation another process just
    # opened for the same session is joined below instead.
    insert_new = dialect_insert(conn)(Conversation).values(
        [_new_conversation(sid, uid, now, silent_at) for sid, uid in wanted]
    )
    returned = conn.execute(
        insert_new.on_conflict_do_nothing(
            index_elements=[Conversation.uid, Conversation.session_id],
            index_where=Conversation.status == LIVE,
        ).returning(Conversation.id, Conversation.session_id, Conversation.uid)
    )
    opened = {(r.session_id, r.uid): r.id for r in returned}
    lost = [pair for pair in wanted if pair not in opened]
    if lost:
        opened |= _schedule(conn, lost, now, silent_at)
    for pair in lost:
        if pair not in opened:  # opened and ended by others in the meantime
            refused[pair] = Conflict(
                f"session {pair[0]!r} changed while these segments were stored: send them again"
            )
    return opened, refused


def ingest_batch(
    conn: Connection, requests: list[IngestRequest], *, silence_s: float = DEFAULT_SILENCE_S
) -> list[dict[str, Any] | NudgeError]:
    """Store the segments of many requests with a fixed handful of statements; one result (or
    refusal) per request, in order. User tokens are checked first; a session without a live
    conversation gets a new one; each touched conversation's flush is scheduled and its silence
    deadline (``silence_s`` from now; 0: none) pushed."""
    denied = _token_refusals(conn, requests)
    allowed = [r for i, r in enumerate(requests) if i not in denied]
    stored = iter(_store(conn, allowed, silence_s) if allowed else [])
    return [denied[i] if i in denied else next(stored) for i in range(len(requests))]


def _store(
    conn: Connection, requests: list[IngestRequest], silence_s: float
) -> list[dict[str, Any] | NudgeError]:
    now = time.time()
    silent_at = now + silence_s if silence_s > 0 else None
    pairs = list(dict.fromkeys((r.session_id, r.uid) for r in requests))  # in request order
    live = _schedule(conn, pairs, now, silent_at)
    waiting = [pair for pair in pairs if pair not in live]
    refused: dict[Pair, NudgeError] = {}
    if waiting:
        opened, refused = _open_conversations(conn, waiting, now, silent_at)
        live |= opened
    rows = [
        s.row(live[(r.session_id, r.uid)], r.uid, now)
        for r in requests
        if (r.session_id, r.uid) in live
        for s in r.segments
    ]
    if rows:
        _INSERT_SEGMENTS.run_many(conn, rows)
    return [
        refused.get((r.session_id, r.uid))
        or {
            "session_id": r.session_id,
            "conversation_id": live[(r.session_id, r.uid)],
            "accepted": len(r.segments),
        }
        for r in requests
    ]


def segment_json(row: Any) -> dict[str, Any]:
    """A segment as realtime webhooks carry it (contract.md §2)."""
    return {
        "text": row.text,
        "speaker": row.speaker,
        "speaker_id": row.speaker_id,
        "is_user": row.is_user,
        "start": row.start,
        "end": row.end,
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
    """A plain title and overview from the transcript (the fallback when no LLM writes them)."""
    text = " ".join(s.text.strip() for s in segments).strip()
    if not text:
        return "Empty conversation", ""
    first = segments[0].text.strip()
    title = first if len(first) <= 60 else first[:59].rsplit(" ", 1)[0] + "…"
    return title, _sentences(text, 500)


def conversation_segments(conn: Connection, conversation_id: str) -> list[Any]:
    return list(
        conn.execute(
            select(Segment).where(Segment.conversation_id == conversation_id).order_by(Segment.id)
        ).all()
    )


def _latest_in_session(conn: Connection, uid: str, session_id: str) -> Any:
    """The session's most recent conversation; 404 when the session was never used."""
    row = conn.execute(
        select(Conversation)
        .where(Conversation.uid == uid, Conversation.session_id == session_id)
        .order_by(Conversation.created_at.desc())
        .limit(1)
    ).first()
    if row is None:
        raise NotFound(f"session {session_id!r} not found for user {uid!r}")
    return row


def session_conversation(conn: Connection, uid: str, session_id: str) -> dict[str, Any]:
    """The session's live (or else most recent) conversation, as the platform API shows it."""
    conv = _latest_in_session(conn, uid, session_id)
    return platform_json(conv, conversation_segments(conn, conv.id))


def platform_json(conv: Any, segments: list[Any]) -> dict[str, Any]:
    """Omi's shape plus the session the conversation was streamed under."""
    return conversation_json(conv, segments) | {"session_id": conv.session_id}


def finish_conversation(
    conn: Connection, uid: str, session_id: str, summary: FinishIn
) -> dict[str, Any]:
    """End the session's live conversation. Its last segments and the ``memory_creation``
    webhooks go out with the dispatcher's next flush; the next segment opens a new one."""
    now = time.time()
    closed = conn.execute(
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
    ).first()
    if closed is None:
        last = _latest_in_session(conn, uid, session_id)  # 404 when it is not this user's
        raise Conflict(
            f"session {session_id!r} has no live conversation (the last one, {last.id}, is "
            f"{last.status}): its next segment starts a new one"
        )
    segments = conversation_segments(conn, closed.id)
    close_conversation(conn, closed.id, segments, summary)
    conv = conn.execute(select(Conversation).where(Conversation.id == closed.id)).one()
    return platform_json(conv, segments)


def close_conversation(
    conn: Connection, conversation_id: str, segments: list[Any], summary: FinishIn
) -> None:
    """Write what an ended conversation keeps: its transcript (what full-text search indexes;
    every write re-indexes it, so it is written once, here) and the summary given, or a plain
    one that the LLM may replace (``summary_pending``)."""
    title, overview = derive_summary(segments)
    values: dict[str, Any] = {
        "title": summary.title or title,
        "overview": summary.overview or overview,
        "summary_pending": summary.title is None and summary.overview is None,
        "transcript": "".join(transcript_line(s.text, s.speaker, s.is_user) for s in segments),
    }
    if summary.language is not None:
        values["language"] = summary.language
    if summary.geolocation is not None:
        values["geolocation"] = summary.geolocation.model_dump()
    conn.execute(update(Conversation).where(Conversation.id == conversation_id).values(values))


@lru_cache(maxsize=2)
def _silent_statement(postgres: bool) -> Statement:
    """End live conversations whose silence deadline passed; as the flush claim, so with any
    number of processes each is ended once. ``finished_at`` is when its last segment came."""
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


def finish_silent(conn: Connection, now: float, *, silence_s: float, limit: int) -> list[str]:
    """End up to ``limit`` conversations that had no segment for ``silence_s``, as ``finish``
    would (their flush is due at once); their ids."""
    rows = _silent_statement(conn.dialect.name == "postgresql").rows(
        conn, {"now": now, "silence_s": silence_s, "limit": limit}
    )
    for row in rows:
        close_conversation(conn, row.id, conversation_segments(conn, row.id), FinishIn())
    return [row.id for row in rows]


def queue_memory_webhooks(conn: Connection, conversation_id: str) -> None:
    """Send the ``memory_creation`` webhooks of a conversation stored whole (Omi's integration
    API imports one finished, with its segments and summary), in the caller's transaction.

    The conversation is marked ``finishing`` with its flush due now: the next dispatcher claim,
    in any worker process, marks it ``finished`` and calls every installed app with
    ``triggers_on: memory_creation`` once, as for a live conversation that ended (a
    ``discarded`` one calls none, as in Omi). Its segments count as sent: realtime apps are not
    called for them. Set ``summary_pending`` on the row first to have the LLM write its title
    and overview before the calls.
    """
    sent = select(func.coalesce(func.max(Segment.id), 0)).where(
        Segment.conversation_id == conversation_id
    )
    conn.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(
            status="finishing",
            silence_due_at=None,
            flushed_upto=sent.scalar_subquery(),
            flush_due_at=time.time(),
            flush_lease_until=None,
        )
    )


class Dispatch(Protocol):
    """What ingestion needs from the local dispatcher (see ``nudge.proactive.dispatcher``)."""

    def claim_now(self, conn: Connection, conversation_ids: list[str]) -> list[Any]: ...

    def start(self, flushes: list[Any]) -> None: ...

    def wake(self, conversation_id: str | None = None) -> None: ...


class Ingestor:
    """Stores segments from concurrent requests in batches.

    While one batch is written, new requests queue up and form the next: each batch is one
    transaction with a fixed handful of statements (:func:`ingest_batch`), plus, in a process that
    dispatches, the flush of those conversations whose window is open. Callers are answered once
    their segments are committed. The batch is its own transaction, on SQLite run on the event
    loop when the write lock is free (``Database.run_in_transaction(on_loop=True)``): a second
    round of batching in the shared writer would only add event-loop turns and a thread trip to
    every segment's way to the webhooks.
    """

    def __init__(
        self,
        db: Database,
        dispatch: Dispatch | None,
        max_batch: int,
        *,
        silence_s: float = DEFAULT_SILENCE_S,
    ) -> None:
        self.db = db
        self.dispatch = dispatch
        self.silence_s = silence_s
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
        self._after(results, flushes)
        return results

    def _work(
        self, requests: list[IngestRequest], conn: Connection
    ) -> tuple[list[dict[str, Any] | NudgeError], list[Any]]:
        results = ingest_batch(conn, requests, silence_s=self.silence_s)
        stored = _conversation_ids(results)
        flushes = self.dispatch.claim_now(conn, stored) if self.dispatch and stored else []
        return results, flushes

    def _after(self, results: list[Any], flushes: list[Any]) -> None:
        if self.dispatch is None:
            return
        self.dispatch.start(flushes)
        flushed = {f.conversation_id for f in flushes}
        for cid in _conversation_ids(results):
            if cid not in flushed:
                self.dispatch.wake(cid)


def _conversation_ids(results: list[dict[str, Any] | NudgeError]) -> list[str]:
    """The conversations that took segments, once each, in order."""
    return list(dict.fromkeys(r["conversation_id"] for r in results if isinstance(r, dict)))
