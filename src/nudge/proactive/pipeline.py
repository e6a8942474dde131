"""What Nudge does with an app's answer (contract.md §2, §3), every step written to the trace.

``{"session_id", "notification": {"prompt", "params", "context"?}}`` runs the proactive pipeline:
1. capability ``proactive_notification`` and a live install; 2. prompt of 5 to 128,000 chars;
3. scopes that count = params ∩ manifest scopes ∩ granted; 4. the atomic 30 s claim;
5. context for those scopes (``context`` steers ``{{user_context}}``); 6. plain ``{{ name }}``
filling; 7. the generation step (``nudge.llm.writer``: user data fenced, a structured answer,
cleaned and checked; quiet or held = nothing sent, claim given back); 8. delivery as
"<App name> says", stored in the app's chat.
``{"message": "..."}`` is a notification from the app, sent as Omi sends it: over 5 chars from a
realtime webhook, any from a memory-creation one, and not counted against the direct API's hourly
cap (the 60 s duplicate window holds, and ``NUDGE_WEBHOOK_MESSAGE_LIMIT_PER_HOUR`` guards against
a runaway app). An empty message is no action. An answer with both gets both, each outcome in the
trace. Anything else is no action, or an invalid answer recorded in the trace.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from sqlalchemy import Connection, bindparam, select

from nudge.bus.local import EventBus
from nudge.config import Settings
from nudge.core.acceptor import Acceptor
from nudge.core.manifest import SCOPES
from nudge.core.notifications import NotificationRequest, validate_message
from nudge.errors import NudgeError
from nudge.llm import LLM, LLMError
from nudge.llm.writer import WriteOptions, write
from nudge.metrics import Metrics
from nudge.proactive.claims import Claims
from nudge.proactive.context import Steering, build_context, parse_steering
from nudge.proactive.filler import fill, placeholders
from nudge.proactive.traces import TraceRecorder, bounded
from nudge.store.fast import Statement
from nudge.store.models import Install

log = logging.getLogger("nudge.proactive")

PROMPT_MIN, PROMPT_MAX = 5, 128_000
MESSAGE_MIN = 6  # realtime {"message"} answers must be over 5 chars (as in Omi)
MEMORY_CREATION = "memory_creation"  # a trace kind: memory-creation messages may be shorter
NOTIFICATION_MAX_CHARS = 300


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


@dataclass
class Answer:
    prompt: str | None = None
    params: list[str] = field(default_factory=list)
    steering: Steering | None = None  # notification.context
    message: str | None = None  # None also for an empty one: no action
    error: str | None = None  # the answer broke a rule; nothing is done

    @property
    def empty(self) -> bool:
        return self.prompt is None and self.message is None and self.error is None


def parse_answer(body: bytes) -> Answer:
    """Read an app's answer; never raises."""
    if not body.strip():
        return Answer()
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        start = body[:80].decode("utf-8", errors="replace")
        return Answer(error=f"answer is not JSON (it starts with {start!r})")
    if not isinstance(data, dict):
        return Answer(error=f"answer must be a JSON object, not {type(data).__name__}")
    out = Answer()
    note = data.get("notification")
    if note is not None:
        if not isinstance(note, dict):
            return Answer(error="notification: must be an object with 'prompt' and 'params'")
        prompt, params = note.get("prompt"), note.get("params", [])
        if not isinstance(prompt, str):
            return Answer(error="notification.prompt: must be a string")
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return Answer(error="notification.params: must be a list of scope names (strings)")
        try:
            out.steering = parse_steering(note.get("context"))
        except ValueError as exc:
            return Answer(error=str(exc))
        out.prompt, out.params = prompt, list(dict.fromkeys(params))
    message = data.get("message")
    if message is not None:
        if not isinstance(message, str):
            return Answer(error="message: must be a string")
        out.message = message if message.strip() else None
    return out


def scope_decisions(app: AppTarget, params: list[str], used: list[str]) -> dict[str, str]:
    """For each scope the answer names or the prompt uses: 'filled', or why it is not."""
    decisions: dict[str, str] = {}
    for name in params:
        if name not in SCOPES:
            decisions[name] = f"unknown scope: ignored (scopes are {', '.join(SCOPES)})"
    for name in dict.fromkeys([*[p for p in params if p in SCOPES], *used]):
        if name not in params:
            decisions[name] = "not listed in notification.params"
        elif name not in app.manifest_scopes:
            decisions[name] = "not in the manifest's proactive_notification.scopes"
        elif name not in app.granted:
            decisions[name] = "not granted by the user"
        else:
            decisions[name] = "filled"
    return decisions


def decide_scopes(
    app: AppTarget, params: list[str], prompt: str
) -> tuple[dict[str, str], list[str]]:
    """The decision on each scope named or used, and the scopes that count."""
    decisions = scope_decisions(app, params, placeholders(prompt))
    return decisions, [name for name, why in decisions.items() if why == "filled"]


_INSTALL_SCOPES = Statement(
    select(Install.scopes).where(
        Install.uid == bindparam("uid"), Install.app_id == bindparam("app_id")
    )
)


def read_inputs(
    conn: Connection, *, app: AppTarget, uid: str, conversation_id: str, answer: Answer
) -> tuple[AppTarget, dict[str, str], dict[str, Any]] | None:
    """The app with the user's grants as they are now, and the context values for the scopes
    that count and that the prompt uses (step 5); None when the app is no longer installed."""
    installed = _INSTALL_SCOPES.rows(conn, {"uid": uid, "app_id": app.app_id})
    if not installed:
        return None
    granted = installed[0].scopes
    if tuple(granted) != app.granted:
        app = replace(app, granted=tuple(granted))
    prompt = answer.prompt or ""
    _, effective = decide_scopes(app, answer.params, prompt)
    wanted = [s for s in placeholders(prompt) if s in effective]
    values, notes = build_context(
        conn,
        uid=uid,
        app_id=app.app_id,
        conversation_id=conversation_id,
        scopes=wanted,
        steering=answer.steering,
    )
    return app, values, notes


class Pipeline:
    def __init__(
        self,
        *,
        settings: Settings,
        acceptor: Acceptor,
        bus: EventBus,
        llm: LLM,
        claims: Claims,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.acceptor = acceptor
        self.bus = bus
        self.llm = llm
        self.claims = claims
        self.metrics = metrics
        self.write_options = WriteOptions.from_settings(settings, NOTIFICATION_MAX_CHARS)

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
        if answer.error:
            trace.detail["answer"] = {"kind": "invalid"}
            trace.outcome("invalid_answer", answer.error)
            return
        if answer.empty:
            trace.detail["answer"] = {"kind": "none"}
            trace.outcome("no_action")
            return
        both = answer.prompt is not None and answer.message is not None
        trace.detail["answer"] = {
            "kind": "proactive" if answer.prompt is not None else "message",
            "also_message": both,
        }
        try:
            if answer.prompt is not None:
                trace.step = "proactive" if both else None
                await self.proactive(app, uid, conversation_id, answer, trace)
            if answer.message is not None:
                trace.step = "message" if both else None
                await self.message(app, uid, answer.message, trace)
        except Exception as exc:  # a bug here must not stop the dispatcher; the trace says so
            log.exception("pipeline failed", extra={"app_id": app.app_id, "uid": uid})
            trace.outcome("internal_error", f"{type(exc).__name__}; it was logged on the platform")

    async def proactive(
        self,
        app: AppTarget,
        uid: str,
        conversation_id: str | None,
        answer: Answer,
        trace: TraceRecorder,
    ) -> None:
        prompt = answer.prompt or ""
        # 1. Capability and install.
        if "proactive_notification" not in app.capabilities:
            trace.outcome(
                "not_allowed",
                "this app lacks the 'proactive_notification' capability: add it, with "
                "proactive_notification.scopes, to the manifest",
            )
            return
        # 2. Prompt length.
        trace.detail["prompt"] = {"template": bounded(prompt), "template_chars": len(prompt)}
        if not PROMPT_MIN <= len(prompt) <= PROMPT_MAX:
            trace.outcome(
                "invalid_answer",
                f"notification.prompt: {len(prompt)} characters; it must be "
                f"{PROMPT_MIN} to {PROMPT_MAX:,}",
            )
            return
        # 3. Scopes that count (grants as read when the segments were sent; re-read below
        # before any data is used).
        self._decide_scopes(app, answer.params, prompt, trace)
        # 4. The claim: at most one proactive notification per user per app per interval.
        key = f"proactive:{app.app_id}:{uid}"
        # Won, it brings the install as it is now and the context (one trip with the claim).
        reads = partial(
            read_inputs, app=app, uid=uid, conversation_id=conversation_id or "", answer=answer
        )
        claimed = await self.claims.claim(key, self.settings.proactive_interval_s, reads)
        trace.detail["rate_limit"] = {
            "key": key,
            "backend": self.claims.backend,
            "interval_s": self.settings.proactive_interval_s,
            "decision": "claimed" if claimed.granted else "limited",
        }
        if claimed.claim is None:
            trace.detail["rate_limit"]["retry_after_s"] = round(claimed.retry_after_s, 3)
            trace.outcome(
                "rate_limited",
                f"one proactive notification per user per app every "
                f"{self.settings.proactive_interval_s:g} s; next slot in "
                f"{claimed.retry_after_s:.1f} s",
            )
            return
        sent = False
        try:
            sent = await self._generate_and_send(app, uid, answer, claimed.then, trace)
        finally:
            if not sent:
                await self.claims.release(claimed.claim)
                trace.detail["rate_limit"]["decision"] = "released"

    def _decide_scopes(
        self, app: AppTarget, params: list[str], prompt: str, trace: TraceRecorder
    ) -> None:
        decisions, effective = decide_scopes(app, params, prompt)
        trace.detail["scopes"] = {
            "params": params,
            "manifest": list(app.manifest_scopes),
            "granted": list(app.granted),
            "effective": effective,
            "decisions": decisions,
        }

    async def _generate_and_send(
        self,
        app: AppTarget,
        uid: str,
        answer: Answer,
        found: tuple[AppTarget, dict[str, str], dict[str, Any]] | None,
        trace: TraceRecorder,
    ) -> bool:
        """Steps 5 to 8, with what :func:`read_inputs` found."""
        if found is None:
            trace.outcome("not_allowed", "the user no longer has this app installed")
            return False
        prompt = answer.prompt or ""
        app, values, notes = found
        self._decide_scopes(app, answer.params, prompt, trace)
        if notes:
            trace.detail["context"] = notes
        # 6. Fill.
        reasons = {
            name: why for name, why in trace.detail["scopes"]["decisions"].items() if name in SCOPES
        }
        filled = fill(prompt, values, reasons)
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
        if written.decision != "send":
            trace.outcome(written.decision, written.reason)
            return False
        # 8. Deliver as the app, stored in the app's chat.
        return await self._accept(app, uid, written.text, "proactive", trace)

    async def message(self, app: AppTarget, uid: str, message: str, trace: TraceRecorder) -> None:
        """``{"message": ...}``: a notification from the app, as Omi sends one (see the module
        docstring): kind ``message``, not counted against the direct API's hourly cap."""
        if trace.kind != MEMORY_CREATION and len(message.strip()) < MESSAGE_MIN:
            trace.outcome("message_refused", "message: must be over 5 characters; ignored")
            return
        try:
            text = validate_message(message, self.settings.message_max_chars)
        except NudgeError as exc:
            trace.outcome("message_refused", exc.detail)
            return
        await self._accept(app, uid, text, "message", trace)

    async def _accept(
        self, app: AppTarget, uid: str, text: str, kind: str, trace: TraceRecorder
    ) -> bool:
        request = NotificationRequest(app_id=app.app_id, uid=uid, message=text, kind=kind)
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
        }
        if trace.notification_id is None:  # the first one (an answer may send two)
            trace.notification_id = accepted.notification_id
            trace.detail["notification"] = note
        else:
            trace.detail["also_notification"] = note
        trace.detail.setdefault("timing", {})["accepted_at"] = time.time()
        trace.outcome("notified" if kind == "proactive" else "message_sent")
        return True
