"""The webhook dispatcher (contract.md §2): flush each conversation's new segments to its apps.

Per conversation, at most once per ``NUDGE_WEBHOOK_FLUSH_INTERVAL_S``, the segments that arrived
since the last call go to every installed, active app with ``triggers_on: transcript_processed``,
concurrently, as Omi sends them: ``POST {url}?session_id=UID&uid=UID`` with ``{"session_id": UID,
"conversation_id", "segments"}``. A finished conversation's last flush also sends the
``memory_creation`` webhooks (after the LLM wrote its title and overview, when it has to).
Conversations silent for ``NUDGE_CONVERSATION_SILENCE_S`` are ended here too
(:func:`nudge.proactive.ingest.finish_silent`, claimed like flushes).

Claiming is one conditional UPDATE on ``conversations`` (``flush_due_at`` reached and the
``flush_lease_until`` gate open; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), in the same
transaction that reads the new segments and advances ``flushed_upto``: with any number of
processes, each segment is sent once. The gate is the start of the conversation's next one-second
window (see :func:`next_gate`). Calls are made after the commit: a crash mid-call loses that call
(the transcript is stored), never duplicates one.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache, partial
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, func, or_, select, update

from nudge.config import Settings
from nudge.core.retention import prune_in_chunks
from nudge.metrics import Metrics
from nudge.net.webhooks import WebhookClient, WebhookResult, WebhookTarget
from nudge.proactive.conversation import conversation_json
from nudge.proactive.ingest import conversation_segments, finish_silent, segment_json
from nudge.proactive.pipeline import AppTarget, Pipeline
from nudge.proactive.sql import claimable
from nudge.proactive.summary import TRANSCRIPT_MAX_CHARS, summarize, transcript_text
from nudge.proactive.traces import TraceRecorder, prune_traces, save_traces
from nudge.store.batch import BatchWriter
from nudge.store.db import Database
from nudge.store.fast import Statement
from nudge.store.models import App, Conversation, Install, Segment

log = logging.getLogger("nudge.dispatcher")

REALTIME = "transcript_processed"
INGEST_BATCH = 256  # requests per ingestion batch (and so conversations per claim-on-ingest)
MEMORY = "memory_creation"
TRACE_BATCH = 256  # traces per INSERT (the batch writer's transactions stay short)


@dataclass
class Flush:
    """One claimed conversation: the segments to send and, when it just finished, its object."""

    conversation_id: str
    uid: str
    session_id: str | None  # the client's, for traces (webhooks carry the uid, as Omi's)
    segments: list[dict[str, Any]] = field(default_factory=list)
    first_at: float | None = None  # ingest time of the oldest segment sent
    last_at: float | None = None
    conversation: dict[str, Any] | None = None  # set when the conversation just finished
    summary_pending: bool = False  # ... and the LLM is to write its title and overview
    gate: float = 0.0  # when its next window opens
    apps: list[AppTarget] = field(default_factory=list)


def next_gate(became_due: float, started_at: float, interval_s: float) -> float:
    """When the conversation's next call may go out: the start of the next flush window.

    Windows are ``interval_s`` long and centred on multiples of the interval after the conversation
    started; each window holds at most one call. A segment arriving in a window whose call was
    made waits for the next window. Unlike "one interval after the last call", fixed windows do
    not drift: a steady segment-a-second stream keeps getting one call per segment however its
    arrival times jitter (within half an interval).
    """
    if interval_s <= 0:
        return became_due
    window = math.floor((became_due - started_at) / interval_s + 0.5)
    return started_at + (window + 0.5) * interval_s


# The statements are built once (building SQLAlchemy expressions costs more than running these
# small queries); values travel as bound parameters.
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
_INSTALLED_APPS = Statement(
    select(
        Install.uid,
        Install.scopes,
        App.id,
        App.name,
        App.manifest,
        App.webhook_secret,
        App.webhook_failing_since,
    )
    .join(App, App.id == Install.app_id)
    .where(Install.uid.in_(bindparam("uids", expanding=True)), App.status == "active")
    .order_by(App.id)
)


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
        .returning(
            Conversation.id,
            Conversation.uid,
            Conversation.session_id,
            Conversation.status,
            Conversation.summary_pending,
            Conversation.flushed_upto,
            Conversation.started_at,
            Conversation.flush_lease_until,
        )
    )


def claim_flushes(
    conn: Connection,
    now: float,
    *,
    limit: int,
    interval_s: float,
    conversation_ids: list[str] | None = None,
) -> list[Flush]:
    """Claim due conversations (among ``conversation_ids`` when given), read their new segments
    and mark them sent, in the caller's transaction."""
    by_id = conversation_ids is not None
    claim = _claim_statement(conn.dialect.name == "postgresql", by_id, limit)
    claimed = claim.rows(conn, {"now": now, "cids": conversation_ids or []})
    if not claimed:
        return []
    flushes = {
        r.id: Flush(
            r.id,
            r.uid,
            r.session_id,
            gate=next_gate(r.flush_lease_until, r.started_at, interval_s),
        )
        for r in claimed
    }
    rows = _NEW_SEGMENTS.rows(conn, {"ids": list(flushes)})
    upto = {r.id: r.flushed_upto for r in claimed}
    for s in rows:
        flush = flushes[s.conversation_id]
        flush.segments.append(segment_json(s))
        flush.first_at = s.created_at if flush.first_at is None else flush.first_at
        flush.last_at = s.created_at
        upto[s.conversation_id] = s.id
    _MARK_SENT.run_many(
        conn, [{"cid": r.id, "upto": upto[r.id], "gate": flushes[r.id].gate} for r in claimed]
    )
    for r in claimed:
        if r.status == "finished":  # it was "finishing": this is its last flush
            conv = conn.execute(select(Conversation).where(Conversation.id == r.id)).one()
            segments = conversation_segments(conn, r.id)
            flushes[r.id].conversation = conversation_json(conv, segments)
            flushes[r.id].summary_pending = bool(r.summary_pending)
    apps = _INSTALLED_APPS.rows(conn, {"uids": list({f.uid for f in flushes.values()})})
    by_uid: dict[str, list[AppTarget]] = defaultdict(list)
    for row in apps:
        target = AppTarget.from_row(row)
        if target is not None:
            by_uid[row.uid].append(target)
    for flush in flushes.values():
        flush.apps = by_uid.get(flush.uid, [])
    return list(flushes.values())


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


class Dispatcher:
    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        writer: BatchWriter,
        webhooks: WebhookClient,
        pipeline: Pipeline,
        metrics: Metrics,
        batch_size: int = 200,
        max_in_flight: int = 5000,
    ) -> None:
        self.settings = settings
        self.db = db
        self.writer = writer
        self.webhooks = webhooks
        self.pipeline = pipeline
        self.metrics = metrics
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._last_prune = 0.0
        self._traces: list[TraceRecorder] = []
        self._trace_writer: asyncio.Task[None] | None = None
        self._gates: dict[str, float] = {}  # conversation -> its next window, from our claims
        self._timers: list[float] = []  # heap of window openings to look at

    def wake(self, conversation_id: str | None = None) -> None:
        """New segments (or a finished conversation) in this process. A conversation whose
        current window already had its call is looked at when its next window opens; anything
        else at once."""
        gate = self._gates.get(conversation_id) if conversation_id is not None else None
        if gate is not None and gate > time.time():
            heapq.heappush(self._timers, gate)
        else:
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        log.info("dispatcher started", extra={"interval_s": self.settings.webhook_flush_interval_s})
        while not self._stopping:
            try:
                claimed = await self.step()
            except Exception:
                log.exception("dispatcher step failed; retrying")
                claimed = 0
                await asyncio.sleep(1.0)
            if claimed >= self.batch_size or self._stopping:
                continue
            await self._sleep()

    def _timer_due(self) -> bool:
        now, due = time.time(), False
        while self._timers and self._timers[0] <= now:
            heapq.heappop(self._timers)
            due = True
        return due

    async def _sleep(self) -> None:
        """Until woken, a window opens for a conversation waiting here, or the poll interval (which
        finds segments stored by other processes) is up."""
        if self._timer_due():
            return
        delay = self.settings.dispatcher_poll_interval_s
        if self._timers:
            delay = min(delay, self._timers[0] - time.time())
        try:
            await asyncio.wait_for(self._wake.wait(), max(delay, 0.0))
        except TimeoutError:
            pass
        self._wake.clear()
        self._timer_due()

    async def step(self) -> int:
        """End silent conversations, claim due ones and start their calls; returns how many
        conversations were claimed."""
        self._wake.clear()
        if len(self._in_flight) >= self.max_in_flight:
            log.warning("webhook calls backlogged", extra={"in_flight": len(self._in_flight)})
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
        now = time.time()
        flushes = await self.writer.run(partial(self._claim, now=now))
        self.start(flushes)
        await self._maybe_prune(now)
        return len(flushes)

    def _claim(self, conn: Connection, now: float) -> list[Flush]:
        silence_s = self.settings.conversation_silence_s
        if silence_s > 0:
            ended = finish_silent(conn, now, silence_s=silence_s, limit=self.batch_size)
            if ended:
                log.info("silent conversations ended", extra={"count": len(ended)})
        interval = self.settings.webhook_flush_interval_s
        return claim_flushes(conn, now, limit=self.batch_size, interval_s=interval)

    def claim_now(self, conn: Connection, conversation_ids: list[str]) -> list[Flush]:
        """Inside the transaction that stored segments: flush the conversations whose window is
        open right there (saves a round through the dispatcher loop). Hand the result to
        :meth:`start` after the commit; the others get a timer from :meth:`wake`."""
        now = time.time()
        open_now = [cid for cid in conversation_ids if self._gates.get(cid, 0.0) <= now]
        if not open_now:
            return []
        interval = self.settings.webhook_flush_interval_s
        return claim_flushes(
            conn, now, limit=INGEST_BATCH, interval_s=interval, conversation_ids=open_now
        )

    def start(self, flushes: list[Flush]) -> None:
        """Start the calls of claimed flushes (after their transaction committed)."""
        for flush in flushes:
            self._gates[flush.conversation_id] = flush.gate
            if flush.segments:
                for app in flush.apps:
                    if app.triggers_on == REALTIME:
                        self._spawn(self.call_realtime(app, flush))
            if flush.conversation is not None:
                memory = [app for app in flush.apps if app.triggers_on == MEMORY]
                if memory or flush.summary_pending:
                    self._spawn(self.conversation_finished(flush, memory))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _trace(self, app: AppTarget, flush: Flush, kind: str) -> TraceRecorder:
        return TraceRecorder(
            app.app_id, flush.uid, flush.session_id, kind, conversation_id=flush.conversation_id
        )

    async def call_realtime(self, app: AppTarget, flush: Flush) -> None:
        # As Omi's backend: the session id is the uid (apps keep state per user across
        # conversations); the conversation id tells conversations apart.
        payload = {
            "session_id": flush.uid,
            "conversation_id": flush.conversation_id,
            "segments": flush.segments,
        }
        params = {"session_id": flush.uid, "uid": flush.uid}
        trace = self._trace(app, flush, REALTIME)
        trace.detail["timing"] = {
            "segments_first_at": flush.first_at,
            "segments_last_at": flush.last_at,
        }
        await self._call(app, flush, params, payload, trace)

    async def conversation_finished(self, flush: Flush, memory: list[AppTarget]) -> None:
        """Write the LLM's title and overview when it has to, then call the memory apps."""
        conversation = flush.conversation
        assert conversation is not None
        if flush.summary_pending:
            try:
                await self._summarize(flush.conversation_id, conversation)
            except Exception:  # the plain title and overview stay; the webhooks still go
                log.exception(
                    "conversation summary failed",
                    extra={"conversation_id": flush.conversation_id},
                )
        if conversation["discarded"]:  # as Omi: no memory webhooks for a discarded one
            return
        # An imported conversation goes to the other apps, not back to the app that sent it
        # (Omi's backend calls that one too, which lets an app loop on its own imports).
        others = [app for app in memory if app.app_id != conversation["app_id"]]
        await asyncio.gather(*(self.call_memory(app, flush) for app in others))

    async def _summarize(self, conversation_id: str, conversation: dict[str, Any]) -> None:
        structured = conversation["structured"]
        # An import may be text alone (Omi's integration API keeps it in external_data).
        imported = (conversation["external_data"] or {}).get("text") or ""
        text = (
            transcript_text(conversation["transcript_segments"]) or imported[:TRANSCRIPT_MAX_CHARS]
        )
        summary = await summarize(self.pipeline.llm, text)
        values: dict[str, Any] = {"summary_pending": False}
        if summary is not None:
            values |= {
                "title": summary.title,
                "overview": summary.overview,
                "category": summary.category,
            }
            structured.update(
                title=summary.title, overview=summary.overview, category=summary.category
            )
        await self.writer.run(
            lambda conn: conn.execute(
                update(Conversation).where(Conversation.id == conversation_id).values(values)
            )
        )

    async def call_memory(self, app: AppTarget, flush: Flush) -> None:
        trace = self._trace(app, flush, MEMORY)
        await self._call(app, flush, {"uid": flush.uid}, flush.conversation, trace)

    async def _call(
        self,
        app: AppTarget,
        flush: Flush,
        params: dict[str, str],
        payload: Any,
        trace: TraceRecorder,
    ) -> None:
        try:
            trace.detail["request"] = {
                "method": "POST",
                "url": app.webhook_url,
                "query": params,
                "segments": len(
                    payload.get("segments") or payload.get("transcript_segments") or []
                ),
            }
            timing = trace.detail.setdefault("timing", {})
            timing["sent_at"] = time.time()
            result = await self.webhooks.send(
                WebhookTarget(app.app_id, app.secret),
                "POST",
                app.webhook_url,
                params=params,
                payload=payload,
            )
            timing["webhook_s"] = round(result.seconds, 4)
            if result.skipped:
                self.metrics.webhook_calls.labels("skipped").inc()
                if not result.first_skip:
                    return  # one trace per open period, not one per skipped call
                trace.detail["response"] = result.summary()
                trace.outcome("circuit_open", result.error)
            else:
                trace.detail["response"] = result.summary()
                self.metrics.webhook_calls.labels("ok" if result.ok else "failed").inc()
                await self._record_health(app, result)
                if result.ok:
                    await self.pipeline.handle(
                        app, flush.uid, flush.conversation_id, result.body, trace
                    )
                else:
                    trace.outcome("webhook_failed", result.error)
            self._save_trace(trace)
        except Exception:
            log.exception(
                "webhook call handling failed",
                extra={"app_id": app.app_id, "conversation_id": flush.conversation_id},
            )

    def _save_trace(self, trace: TraceRecorder) -> None:
        """Queue a trace; one task writes the queue in bulk (one INSERT for many calls)."""
        self._traces.append(trace)
        if self._trace_writer is None or self._trace_writer.done():
            self._trace_writer = asyncio.create_task(self._write_traces())

    async def _write_traces(self) -> None:
        while self._traces:
            batch, self._traces = self._traces[:TRACE_BATCH], self._traces[TRACE_BATCH:]
            try:
                await self.writer.run(partial(save_traces, traces=batch))
            except Exception:
                log.exception("traces not saved", extra={"count": len(batch)})

    async def _record_health(self, app: AppTarget, result: WebhookResult) -> None:
        """Keep ``webhook_failing_since``; disable an app that kept failing for too long."""
        now = time.time()
        if result.ok:
            if app.failing_since is not None:
                await self.writer.run(
                    lambda conn: conn.execute(
                        update(App).where(App.id == app.app_id).values(webhook_failing_since=None)
                    )
                )
            return
        if app.failing_since is None:
            await self.writer.run(
                lambda conn: conn.execute(
                    update(App)
                    .where(App.id == app.app_id)
                    .values(webhook_failing_since=func.coalesce(App.webhook_failing_since, now))
                )
            )
            return
        limit = self.settings.webhook_disable_after_s
        if now - app.failing_since < limit:
            return
        reason = (
            f"disabled at {_iso(now)}: its webhook has failed since {_iso(app.failing_since)} "
            f"(last error: {result.error}). Fix {app.webhook_url}, then re-enable the app with "
            f"POST /v1/apps/{app.app_id}/enable"
        )
        disabled = await self.writer.run(
            lambda conn: (
                conn.execute(
                    update(App)
                    .where(
                        App.id == app.app_id,
                        App.status == "active",
                        App.webhook_failing_since <= now - limit,
                    )
                    .values(status="disabled", status_reason=reason)
                ).rowcount
            )
        )
        if disabled:
            log.warning("app disabled", extra={"app_id": app.app_id, "reason": reason})

    async def _maybe_prune(self, now: float) -> None:
        if now - self._last_prune < 300:
            return
        self._last_prune = now
        self._gates = {cid: gate for cid, gate in self._gates.items() if gate > now}
        cutoff = now - self.settings.trace_retention_s
        # Not through the batch writer: short transactions of their own, in the database's thread.
        removed = await prune_in_chunks(self.db, partial(prune_traces, older_than=cutoff))
        if removed:
            log.info("old traces removed", extra={"count": removed})

    async def aclose(self, timeout: float = 5.0) -> None:
        """Stop claiming; let calls in flight finish for a moment, then cancel them."""
        self.stop()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=timeout)
        for task in list(self._in_flight):
            task.cancel()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=1.0)
        if self._trace_writer is not None:
            await asyncio.wait([self._trace_writer], timeout=timeout)
