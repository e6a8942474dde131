"""What Nudge does with an app's answer (contract.md §2, §3), every step written to the trace.

The rules are :mod:`nudge.proactive.plan`'s. ``{"notification": {"prompt", "params", "context"?}}``
runs the proactive pipeline: 1. capability and a live install; 2. prompt length; 3. the scopes that
count; 4. the atomic claim; 5. context for those scopes (``context`` steers ``{{user_context}}``);
6. plain ``{{ name }}`` filling; 7. the generation step (``nudge.llm.writer``; quiet or held =
nothing sent, claim given back); 8. delivery as "<App name> says", stored in the app's chat.
``{"message": "..."}`` is a notification from the app, sent as Omi sends it and not counted
against the direct API's hourly cap (the 60 s duplicate window holds, and
``NUDGE_WEBHOOK_MESSAGE_LIMIT_PER_HOUR`` guards against a runaway app). An answer with both gets
both, each outcome in the trace.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from sqlalchemy import Connection

from nudge.bus.local import EventBus
from nudge.config import Settings
from nudge.core.acceptor import Acceptor
from nudge.core.direct import SendOptions
from nudge.core.notifications import NotificationRequest
from nudge.errors import NudgeError
from nudge.llm import LLM, LLMError
from nudge.llm.writer import WriteOptions, write
from nudge.metrics import Metrics
from nudge.proactive.claims import ClaimResult, Claims, take
from nudge.proactive.context import build_context, live_lines
from nudge.proactive.filler import fill
from nudge.proactive.plan import (
    NOTIFICATION_MAX_CHARS,
    Answer,
    Scopes,
    Step,
    decide_scopes,
    generated,
    parse_answer,
    plan,
    rate_limited,
)
from nudge.proactive.traces import TraceRecorder, bounded
from nudge.store import accounts

log = logging.getLogger("nudge.proactive")


@dataclass(frozen=True)
class AppTarget:
    """An installed app as the dispatcher sees it (from its stored, validated manifest)."""

    app_id: str
    name: str
    secret: str
    webhook_url: str
    triggers_on: str
    capabilities: tuple[str, ...]
    manifest_scopes: tuple[str, ...]
    granted: tuple[str, ...]
    failing_since: float | None

    @classmethod
    def from_row(cls, row: Any) -> AppTarget | None:
        """None when the app has no webhook (no ``external_integration``)."""
        manifest = row.manifest or {}
        caps = tuple(manifest.get("capabilities") or ())
        integration = manifest.get("external_integration") or {}
        if "external_integration" not in caps or not integration.get("webhook_url"):
            return None
        proactive = manifest.get("proactive_notification") or {}
        scopes = tuple(proactive.get("scopes") or ()) if "proactive_notification" in caps else ()
        return cls(
            app_id=row.id,
            name=row.name,
            secret=row.webhook_secret,
            webhook_url=integration["webhook_url"],
            triggers_on=integration.get("triggers_on", ""),
            capabilities=caps,
            manifest_scopes=scopes,
            granted=tuple(row.scopes or ()),
            failing_since=row.webhook_failing_since,
        )


Found = tuple[AppTarget, Scopes, dict[str, str], dict[str, Any], list[str]]


@dataclass(frozen=True)
class Inputs:
    """Step 5's reads for one answer, once the claim is won."""

    app: AppTarget
    uid: str
    conversation_id: str
    answer: Answer

    def read(self, conn: Connection) -> Found | None:
        """The app with the user's grants as they are now, the scopes that count with them, and
        the context values for those the prompt uses, and the live conversation's lines (which the
        app may quote in its prompt); None when the app is no longer installed."""
        app, answer = self.app, self.answer
        granted = accounts.install_scopes(conn, self.uid, app.app_id)
        if granted is None:
            return None
        if granted != app.granted:
            app = replace(app, granted=granted)
        scopes = decide_scopes(answer.params, answer.prompt or "", app.manifest_scopes, app.granted)
        values, notes = build_context(
            conn,
            uid=self.uid,
            app_id=app.app_id,
            conversation_id=self.conversation_id,
            scopes=scopes.wanted,
            steering=answer.steering,
        )
        return app, scopes, values, notes, live_lines(conn, self.conversation_id)


def claim_and_read(
    conn: Connection, key: str, ttl_s: float, inputs: Inputs
) -> tuple[ClaimResult, Found | None]:
    """Steps 4 and 5 as one unit of work on the database: the claim and, when it is won, the
    reads, in one transaction (one trip; a failed read gives the claim back with it)."""
    claimed = take(conn, key, ttl_s)
    return claimed, inputs.read(conn) if claimed.granted else None


@dataclass(kw_only=True, eq=False)
class Pipeline:
    settings: Settings
    acceptor: Acceptor
    bus: EventBus
    llm: LLM
    claims: Claims
    metrics: Metrics

    def __post_init__(self) -> None:
        self.write_options = WriteOptions.from_settings(self.settings, NOTIFICATION_MAX_CHARS)

    async def handle(
        self,
        app: AppTarget,
        uid: str,
        conversation_id: str | None,
        body: bytes,
        trace: TraceRecorder,
    ) -> None:
        """Act on one 2xx answer. Every outcome lands in ``trace``; nothing raises."""
        answer = parse_answer(body)
        decided = plan(
            answer,
            capabilities=app.capabilities,
            manifest_scopes=app.manifest_scopes,
            granted=app.granted,
            kind=trace.kind,
            message_max_chars=self.settings.message_max_chars,
            interval_s=self.settings.proactive_interval_s,
        )
        trace.detail["answer"] = {"kind": decided.kind}
        if decided.refused:
            trace.outcome(*decided.refused)
            return
        both = decided.proactive is not None and decided.message is not None
        trace.detail["answer"]["also_message"] = both
        try:
            if decided.proactive is not None:
                trace.step = "proactive" if both else None
                await self.proactive(app, uid, conversation_id, answer, decided.proactive, trace)
            if (said := decided.message) is not None:  # as Omi sends it (see the module docstring)
                trace.step = "message" if both else None
                if said.refused is not None:
                    trace.outcome(*said.refused)
                else:
                    await self._accept(
                        app, uid, said.text, "message", answer.message_sending, trace
                    )
        except Exception as exc:  # a bug here must not stop the dispatcher; the trace says so
            log.exception("pipeline failed", extra={"app_id": app.app_id, "uid": uid})
            trace.outcome("internal_error", f"{type(exc).__name__}; it was logged on the platform")

    async def proactive(
        self,
        app: AppTarget,
        uid: str,
        conversation_id: str | None,
        answer: Answer,
        step: Step,
        trace: TraceRecorder,
    ) -> None:
        """Steps 1 to 4 as :func:`nudge.proactive.plan.plan` decided them, then the claim."""
        prompt = answer.prompt or ""
        if step.refused is None or step.refused.outcome != "not_allowed":  # the capability first
            trace.detail["prompt"] = {"template": bounded(prompt), "template_chars": len(prompt)}
        if step.refused is not None:
            trace.outcome(*step.refused)
            return
        # 3. Scopes that count (grants as read when the segments were sent; re-read below
        # before any data is used).
        self._trace_scopes(app, answer.params, step.scopes, trace)
        # 4. The claim: at most one proactive notification per user per app per interval.
        key = f"proactive:{app.app_id}:{uid}"
        interval_s = self.settings.proactive_interval_s
        inputs = Inputs(app, uid, conversation_id or "", answer)
        claimed, found = await self._claim(key, interval_s, inputs)
        trace.detail["rate_limit"] = {
            "key": key,
            "backend": self.claims.backend,
            "interval_s": interval_s,
            "decision": "claimed" if claimed.granted else "limited",
        }
        if claimed.claim is None:
            trace.detail["rate_limit"]["retry_after_s"] = round(claimed.retry_after_s, 3)
            trace.outcome(*rate_limited(interval_s, claimed.retry_after_s))
            return
        sent = False
        try:
            if self.claims.redis is not None:  # 5. a claim in Redis: the reads come after it
                found = await self.claims.db.query(inputs.read)
            sent = await self._generate_and_send(app, uid, answer, found, trace)
        finally:
            if not sent:
                await self.claims.release(claimed.claim)
                trace.detail["rate_limit"]["decision"] = "released"

    async def _claim(
        self, key: str, ttl_s: float, inputs: Inputs
    ) -> tuple[ClaimResult, Found | None]:
        """The claim; in the database it brings step 5's reads too (:func:`claim_and_read`).
        A slot this process saw taken is refused without a trip."""
        claims = self.claims
        if claims.redis is not None:
            return await claims.claim(key, ttl_s), None
        if (refused := claims.remembered(key)) is not None:
            return refused, None
        claimed, found = await claims.db.write_now(
            partial(claim_and_read, key=key, ttl_s=ttl_s, inputs=inputs)
        )
        return claims.remember(key, ttl_s, claimed), found

    def _trace_scopes(
        self, app: AppTarget, params: list[str], scopes: Scopes, trace: TraceRecorder
    ) -> None:
        trace.detail["scopes"] = {
            "params": params,
            "manifest": list(app.manifest_scopes),
            "granted": list(app.granted),
            "effective": scopes.effective,
            "decisions": scopes.decisions,
        }

    async def _generate_and_send(
        self,
        app: AppTarget,
        uid: str,
        answer: Answer,
        found: Found | None,
        trace: TraceRecorder,
    ) -> bool:
        """Steps 5 to 8, with what :meth:`Inputs.read` found."""
        if found is None:
            trace.outcome("not_allowed", "the user no longer has this app installed")
            return False
        prompt = answer.prompt or ""
        app, scopes, values, notes, live = found
        self._trace_scopes(app, answer.params, scopes, trace)
        if notes:
            trace.detail["context"] = notes
        # 6. Fill.
        filled = fill(prompt, values, scopes.reasons, live)
        trace.detail["prompt"].update(
            filled=bounded(filled.text),
            filled_chars=len(filled.text),
            filled_scopes=filled.filled,
            emptied=filled.emptied,
            left_as_written=filled.left_as_written,
        )
        # 7. Generate (nudge.llm.writer: data fenced, a structured answer, cleaned and checked).
        try:
            written = await write(self.llm, filled.parts, self.write_options)
        except LLMError as exc:
            trace.outcome("llm_failed", str(exc))
            return False
        self.metrics.llm_seconds.observe(written.seconds)
        trace.detail["llm"] = {
            "provider": self.llm.name,
            "model": written.model,
            "seconds": round(written.seconds, 4),
            "input": bounded(written.prompt),
            "markers_removed": written.markers_removed,
            "calls": written.calls,
            "raw": bounded(written.raw, 4000),
            "removed": written.removed,
            "decision": written.decision,
            "reason": written.reason,
            "output": written.text,
        }
        trace.detail.setdefault("timing", {})["llm_s"] = round(written.seconds, 4)
        if (refused := generated(written.decision, written.reason)) is not None:
            trace.outcome(*refused)
            return False
        # 8. Deliver as the app, stored in the app's chat.
        return await self._accept(app, uid, written.text, "proactive", answer.sending, trace)

    async def _accept(
        self,
        app: AppTarget,
        uid: str,
        text: str,
        kind: str,
        options: SendOptions,
        trace: TraceRecorder,
    ) -> bool:
        request = NotificationRequest(
            app_id=app.app_id,
            uid=uid,
            message=text,
            kind=kind,
            priority=options.priority,
            ttl=options.ttl,
        )
        try:
            accepted = await self.acceptor.accept(request)
        except NudgeError as exc:
            trace.outcome("message_refused" if kind == "message" else "not_allowed", exc.detail)
            return False
        self.metrics.accepted.labels(kind).inc()
        await self.bus.wake_workers()
        note = {
            "id": accepted.notification_id,
            "kind": kind,
            "title": f"{app.name} says",
            "body": text,
            "devices": accepted.devices,
            "duplicate": accepted.duplicate,
            "priority": options.priority,
            "ttl": options.ttl,
        }
        if accepted.hold:  # the user's preferences held or muted its pushes
            note |= {"hold": accepted.hold, "hold_reason": accepted.hold_reason}
        if trace.notification_id is None:  # the first one (an answer may send two)
            trace.notification_id = accepted.notification_id
            trace.detail["notification"] = note
        else:
            trace.detail["also_notification"] = note
        trace.detail.setdefault("timing", {})["accepted_at"] = time.time()
        trace.outcome("notified" if kind == "proactive" else "message_sent")
        return True
