"""The proactive pipeline's decisions as pure functions: what is sent, held or refused, and why.

The pipeline acts on :func:`plan` and ``nudge simulate`` shows it, so neither restates a rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from nudge.core.direct import SendOptions
from nudge.core.manifest import SCOPES
from nudge.core.notifications import validate_message
from nudge.errors import NudgeError
from nudge.proactive.context import Steering, parse_steering
from nudge.proactive.filler import placeholders
from nudge.sdk.models import check_priority, check_ttl
from nudge.sdk.webhook import MESSAGE_MIN_CHARS, PROMPT_MAX_CHARS, PROMPT_MIN_CHARS  # the wire's

MEMORY_CREATION = "memory_creation"  # a trace kind: memory-creation messages may be shorter
NOTIFICATION_MAX_CHARS = 300


@dataclass
class Answer:
    prompt: str | None = None
    params: list[str] = field(default_factory=list)
    steering: Steering | None = None  # notification.context
    message: str | None = None  # None also for an empty one: no action
    error: str | None = None  # the answer broke a rule; nothing is done
    sending: SendOptions = SendOptions()  # notification.priority, notification.ttl
    message_sending: SendOptions = SendOptions()  # priority, ttl beside "message"


def _options(source: dict[str, Any], where: str) -> SendOptions:
    """The optional ``priority`` and ``ttl`` of ``source`` (``where``: their path's prefix);
    a ValueError names the bad one."""
    priority, ttl = source.get("priority"), source.get("ttl")
    return SendOptions(
        "normal" if priority is None else check_priority(priority, f"{where}priority"),
        None if ttl is None else check_ttl(ttl, f"{where}ttl"),
    )


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
            out.sending = _options(note, "notification.")
        except ValueError as exc:
            return Answer(error=str(exc))
        out.prompt, out.params = prompt, list(dict.fromkeys(params))
    message = data.get("message")
    if message is not None:
        if not isinstance(message, str):
            return Answer(error="message: must be a string")
        try:
            out.message_sending = _options(data, "")
        except ValueError as exc:
            return Answer(error=str(exc))
        out.message = message if message.strip() else None
    return out


class Refusal(NamedTuple):
    """Nothing is sent: the trace outcome and why (``trace.outcome(*refusal)``)."""

    outcome: str
    reason: str | None = None


@dataclass(frozen=True)
class Scopes:
    decisions: dict[str, str]  # each scope named or used: "filled", or why it is not
    effective: list[str]  # the scopes that count
    wanted: list[str]  # those the prompt uses: the context to read, in order of use

    @property
    def reasons(self) -> dict[str, str]:
        """The decisions on real scopes, for the filler (why a placeholder is left empty)."""
        return {name: why for name, why in self.decisions.items() if name in SCOPES}


def decide_scopes(
    params: list[str], prompt: str, manifest_scopes: tuple[str, ...], granted: tuple[str, ...]
) -> Scopes:
    """A scope counts when the answer lists it, the manifest declares it and the user granted it."""
    used = placeholders(prompt)
    decisions: dict[str, str] = {}
    for name in params:
        if name not in SCOPES:
            decisions[name] = f"unknown scope: ignored (scopes are {', '.join(SCOPES)})"
    for name in dict.fromkeys([*[p for p in params if p in SCOPES], *used]):
        if name not in params:
            decisions[name] = "not listed in notification.params"
        elif name not in manifest_scopes:
            decisions[name] = "not in the manifest's proactive_notification.scopes"
        elif name not in granted:
            decisions[name] = "not granted by the user"
        else:
            decisions[name] = "filled"
    effective = [name for name, why in decisions.items() if why == "filled"]
    return Scopes(decisions, effective, [name for name in used if name in effective])


def next_slot(interval_s: float, last_sent_at: float | None, now: float) -> float:
    """Seconds until the next proactive notification may go out (0: now): one per user per app
    per interval (the platform holds it as an atomic claim, ``nudge.proactive.claims``)."""
    return 0.0 if last_sent_at is None else max(last_sent_at + interval_s - now, 0.0)


def rate_limited(interval_s: float, retry_after_s: float) -> Refusal:
    return Refusal(
        "rate_limited",
        f"one proactive notification per user per app every {interval_s:g} s; next slot in "
        f"{retry_after_s:.1f} s",
    )


def generated(decision: str, reason: str) -> Refusal | None:
    """The generation step's verdict: ``send``, or nothing sent (``quiet``: the app's "reply
    SKIP" or nothing to say; ``held``: no answer passed the checks), with why."""
    return None if decision == "send" else Refusal(decision, reason)


@dataclass(frozen=True)
class Step:
    """One part of an answer (``notification`` or ``message``): refused, or what goes ahead."""

    refused: Refusal | None = None
    scopes: Scopes = field(default_factory=lambda: Scopes({}, [], []))  # the notification's
    text: str = ""  # the message's


@dataclass(frozen=True)
class Plan:
    kind: str  # the answer: invalid | none | proactive | message
    refused: Refusal | None = None  # the answer as a whole: invalid, or no action
    proactive: Step | None = None
    message: Step | None = None


def plan(
    answer: Answer,
    *,
    capabilities: tuple[str, ...],
    manifest_scopes: tuple[str, ...],
    granted: tuple[str, ...],
    kind: str,
    message_max_chars: int,
    interval_s: float,
    last_sent_at: float | None = None,
    now: float = 0.0,
) -> Plan:
    """What the platform does with ``answer`` before it reads data or runs the model.

    ``kind`` is the webhook call's (``transcript_processed``, ``memory_creation``);
    ``last_sent_at`` the last proactive notification's time when known (the simulator): the
    platform itself claims the slot atomically and reports :func:`rate_limited` when taken."""
    if answer.error:
        return Plan("invalid", Refusal("invalid_answer", answer.error))
    if answer.prompt is None and answer.message is None:
        return Plan("none", Refusal("no_action"))
    step = said = None
    if (prompt := answer.prompt) is not None:
        if "proactive_notification" not in capabilities:
            why = "this app lacks the 'proactive_notification' capability: add it, with "
            step = Step(
                Refusal("not_allowed", why + "proactive_notification.scopes, to the manifest")
            )
        elif not PROMPT_MIN_CHARS <= len(prompt) <= PROMPT_MAX_CHARS:
            why = f"notification.prompt: {len(prompt)} characters; it must be "
            step = Step(
                Refusal("invalid_answer", f"{why}{PROMPT_MIN_CHARS} to {PROMPT_MAX_CHARS:,}")
            )
        else:
            wait = next_slot(interval_s, last_sent_at, now)
            scopes = decide_scopes(answer.params, prompt, manifest_scopes, granted)
            step = Step(rate_limited(interval_s, wait) if wait else None, scopes)
    if answer.message is not None:
        said = message(answer.message, kind, message_max_chars)
    return Plan("proactive" if prompt is not None else "message", None, step, said)


def message(text: str, kind: str, max_chars: int) -> Step:
    """``{"message"}``: over 5 characters from a realtime call (as in Omi), any from a
    memory-creation one, within the platform's message limits."""
    if kind != MEMORY_CREATION and len(text.strip()) < MESSAGE_MIN_CHARS:
        return Step(Refusal("message_refused", "message: must be over 5 characters; ignored"))
    try:
        return Step(text=validate_message(text, max_chars))
    except NudgeError as exc:
        return Step(Refusal("message_refused", exc.detail))
