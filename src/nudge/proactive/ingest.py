"""Live transcripts stored: each in its session's live conversation, whose flush is scheduled.

A session (``uid``, ``session_id``) is the client's stream; a conversation is one stretch of it.
The first segment of a session (or the first after its conversation ended) opens one; it ends on
``finish`` or after ``NUDGE_CONVERSATION_SILENCE_S`` without a segment (docs/proactive.md).
Write order matters on PostgreSQL: the conversation row is updated (locked) before segments are
inserted, so per conversation segment ids grow in commit order and a flush never skips one."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from sqlalchemy import Connection

from nudge import auth
from nudge.errors import Conflict, NotFound, NudgeError
from nudge.proactive.conversation import conversation_json, conversation_row
from nudge.proactive.flushes import INGEST_BATCH, Flush, claim_flushes
from nudge.proactive.segments import (
    FinishIn,
    SegmentIn,
    check_session_id,
    derive_summary,
    transcript_line,
)
from nudge.store import conversations as sql
from nudge.store.batch import RequestBatcher
from nudge.store.db import Database

log = logging.getLogger("nudge.ingest")

DEFAULT_SILENCE_S = 120.0
Pair = tuple[str, str]  # (session_id, uid)


@dataclass(frozen=True)
class IngestRequest:
    uid: str
    session_id: str
    segments: list[SegmentIn]
    token_hash: str | None = None  # a user token to check in the batch; None: checked already


def _schedule(
    conn: Connection, pairs: list[Pair], now: float, silent_at: float | None
) -> dict[Pair, str]:
    """Schedule the flush of the live conversations of these sessions (and push their silence
    deadline); their ids."""
    sids, uids = list({sid for sid, _ in pairs}), list({uid for _, uid in pairs})
    rows = sql.schedule_live(conn, sids, uids, now, silent_at)
    wanted = set(pairs)
    return {(r.session_id, r.uid): r.id for r in rows if (r.session_id, r.uid) in wanted}


def _open_conversations(
    conn: Connection, pairs: list[Pair], now: float, silent_at: float | None
) -> tuple[dict[Pair, str], dict[Pair, NudgeError]]:
    """Open a conversation for each session that has no live one; why the others cannot."""
    uids = {uid for _, uid in pairs}
    users = sql.known_users(conn, uids)
    refused: dict[Pair, NudgeError] = {
        (sid, uid): NotFound(f"user {uid!r} not found") for sid, uid in pairs if uid not in users
    }
    wanted = [pair for pair in pairs if pair not in refused]
    if not wanted:
        return {}, refused
    # A conversation another process just opened for the same session is joined below instead.
    times = {"created_at": now, "started_at": now, "flush_due_at": now, "silence_due_at": silent_at}
    rows = [
        conversation_row(uid=uid, session_id=sid, status="live", **times) for sid, uid in wanted
    ]
    returned = sql.open_live(conn, rows)
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
    denied = auth.user_token_refusals(conn, [(r.token_hash, r.uid) for r in requests])
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
        sql.insert_segments(conn, rows)
    return [
        refused.get((r.session_id, r.uid))
        or {
            "session_id": r.session_id,
            "conversation_id": live[(r.session_id, r.uid)],
            "accepted": len(r.segments),
        }
        for r in requests
    ]


def _latest_in_session(conn: Connection, uid: str, session_id: str) -> Any:
    """The session's most recent conversation; 404 when the session was never used."""
    row = sql.latest_in_session(conn, uid, session_id)
    if row is None:
        raise NotFound(f"session {session_id!r} not found for user {uid!r}")
    return row


def session_conversation(conn: Connection, uid: str, session_id: str) -> dict[str, Any]:
    """The session's live (or else most recent) conversation, as the platform API shows it."""
    conv = _latest_in_session(conn, uid, session_id)
    return platform_json(conv, sql.segments_of(conn, conv.id))


def platform_json(conv: Any, segments: list[Any]) -> dict[str, Any]:
    """Omi's shape plus the session the conversation was streamed under."""
    return conversation_json(conv, segments) | {"session_id": conv.session_id}


def finish_conversation(
    conn: Connection, uid: str, session_id: str, summary: FinishIn
) -> dict[str, Any]:
    """End the session's live conversation. Its last segments and the ``memory_creation``
    webhooks go out with the dispatcher's next flush; the next segment opens a new one."""
    closed = sql.finish_live(conn, uid, session_id, time.time())
    if closed is None:
        last = _latest_in_session(conn, uid, session_id)  # 404 when it is not this user's
        raise Conflict(
            f"session {session_id!r} has no live conversation (the last one, {last.id}, is "
            f"{last.status}): its next segment starts a new one"
        )
    segments = sql.segments_of(conn, closed)
    close_conversation(conn, closed, segments, summary)
    return platform_json(sql.conversation(conn, closed), segments)


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
    sql.update_conversation(conn, conversation_id, values)


def finish_silent(conn: Connection, now: float, *, silence_s: float, limit: int) -> list[str]:
    """End up to ``limit`` conversations that had no segment for ``silence_s``, as ``finish``
    would (their flush is due at once); their ids."""
    ended = sql.finish_silent(conn, now, silence_s, limit)
    for cid in ended:
        close_conversation(conn, cid, sql.segments_of(conn, cid), FinishIn())
    return ended


def queue_memory_webhooks(conn: Connection, conversation_id: str) -> None:
    """Send the ``memory_creation`` webhooks of a conversation stored whole (an integration API
    import), in the caller's transaction: it is marked ``finishing`` with its flush due now, so
    the next dispatcher claim, in any process, calls each memory app once; its segments count as
    sent (realtime apps are not called for them)."""
    sql.queue_finished(conn, conversation_id, time.time())


class Dispatch(Protocol):
    """What ingestion needs from the local dispatcher (see ``nudge.proactive.dispatcher``)."""

    interval_s: float

    def open_now(self, conversation_ids: list[str]) -> list[str]: ...

    def start(self, flushes: list[Flush]) -> None: ...

    def wake(self, conversation_id: str | None = None) -> None: ...


class Ingestor:
    """Stores segments from concurrent requests in batches: while one batch is written, new
    requests form the next. A batch is one unit of work (:func:`ingest_batch`, plus the flush
    claim of conversations whose window is open); callers are answered once it committed."""

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
        self, uid: str, session_id: str, segments: list[SegmentIn], *, token_hash: str | None = None
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
        results, flushes = await self.db.write_now(partial(self._work, requests))
        self._after(results, flushes)
        return results

    def _work(
        self, requests: list[IngestRequest], conn: Connection
    ) -> tuple[list[dict[str, Any] | NudgeError], list[Flush]]:
        """One unit of work: store the batch, then claim the flushes whose window is open."""
        results = ingest_batch(conn, requests, silence_s=self.silence_s)
        stored = _conversation_ids(results)
        open_now = self.dispatch.open_now(stored) if self.dispatch and stored else []
        if not open_now or self.dispatch is None:
            return results, []
        interval_s = self.dispatch.interval_s
        flushes = claim_flushes(
            conn, time.time(), limit=INGEST_BATCH, interval_s=interval_s, conversation_ids=open_now
        )
        return results, flushes

    def _after(self, results: list[Any], flushes: list[Flush]) -> None:
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
