"""The webhook calls of a flush, as Omi makes them, each with its trace and the app's health.

Calls are made after the claim committed: a crash mid-call loses that call (the transcript is
stored), never duplicates one."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from nudge.metrics import Metrics
from nudge.net.webhooks import WebhookClient, WebhookResult, WebhookTarget
from nudge.proactive.flushes import Flush
from nudge.proactive.health import disable_reason, health_change
from nudge.proactive.pipeline import AppTarget, Pipeline
from nudge.proactive.summary import TRANSCRIPT_MAX_CHARS, summarize, transcript_text
from nudge.proactive.traces import TraceRecorder, TraceWriter
from nudge.store import conversations, traces
from nudge.store.db import Database

log = logging.getLogger("nudge.dispatcher")

REALTIME = "transcript_processed"
MEMORY = "memory_creation"


@dataclass
class WebhookCalls:
    db: Database
    webhooks: WebhookClient
    pipeline: Pipeline
    metrics: Metrics
    disable_after_s: float  # an app whose webhook failed this long is disabled

    def __post_init__(self) -> None:
        self.traces = TraceWriter(self.db)

    def _trace(self, app: AppTarget, flush: Flush, kind: str) -> TraceRecorder:
        return TraceRecorder(
            app.app_id, flush.uid, flush.session_id, kind, conversation_id=flush.conversation_id
        )

    async def realtime(self, app: AppTarget, flush: Flush) -> None:
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

    async def finished(self, flush: Flush, memory: list[AppTarget]) -> None:
        """Write the LLM's title and overview when it has to, then call the memory apps."""
        conversation = flush.conversation
        assert conversation is not None
        if flush.summary_pending:
            try:
                await self._summarize(flush.conversation_id, conversation)
            except Exception:  # the plain title and overview stay; the webhooks still go
                log.exception(
                    "conversation summary failed", extra={"conversation_id": flush.conversation_id}
                )
        if conversation["discarded"]:  # as Omi: no memory webhooks for a discarded one
            return
        # An imported conversation goes to the other apps, not back to the app that sent it
        # (Omi's backend calls that one too, which lets an app loop on its own imports).
        others = [app for app in memory if app.app_id != conversation["app_id"]]
        await asyncio.gather(*(self.memory(app, flush) for app in others))

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
            structured.update(asdict(summary))  # title, overview, category
            values |= asdict(summary)
        await self.db.write(
            lambda conn: conversations.update_conversation(conn, conversation_id, values)
        )

    async def memory(self, app: AppTarget, flush: Flush) -> None:
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
            segments = payload.get("segments") or payload.get("transcript_segments") or []
            trace.detail["request"] = {
                "method": "POST",
                "url": app.webhook_url,
                "query": params,
                "segments": len(segments),
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
            self.traces.save(trace)
        except Exception:
            log.exception(
                "webhook call handling failed",
                extra={"app_id": app.app_id, "conversation_id": flush.conversation_id},
            )

    async def _record_health(self, app: AppTarget, result: WebhookResult) -> None:
        """Keep ``webhook_failing_since``; disable an app that kept failing for too long."""
        now = time.time()
        change = health_change(result.ok, app.failing_since, now, self.disable_after_s)
        if change == "recovered":
            await self.db.write(lambda conn: traces.set_failing_since(conn, app.app_id, None))
        elif change == "failing":
            await self.db.write(lambda conn: traces.set_failing_since(conn, app.app_id, now))
        elif change == "disable":
            assert app.failing_since is not None
            reason = disable_reason(
                app.app_id, app.webhook_url, app.failing_since, now, result.error
            )
            before = now - self.disable_after_s
            if await self.db.write(
                lambda conn: traces.disable_failing(conn, app.app_id, before, reason)
            ):
                log.warning("app disabled", extra={"app_id": app.app_id, "reason": reason})
