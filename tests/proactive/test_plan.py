"""The proactive pipeline's decisions (``nudge.proactive.plan``), without a database: each rule
has a case that fails if the rule changes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nudge.proactive.plan import (
    Plan,
    Refusal,
    generated,
    next_slot,
    parse_answer,
    plan,
    rate_limited,
)

ALL = ("user_name", "user_facts", "user_context", "user_chat")
CAPS = ("external_integration", "proactive_notification")


def decide(body: Any, **given: Any) -> Plan:
    settings: dict[str, Any] = {
        "capabilities": CAPS,
        "manifest_scopes": ALL,
        "granted": ALL,
        "kind": "transcript_processed",
        "message_max_chars": 100,
        "interval_s": 30.0,
    }
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return plan(parse_answer(raw), **(settings | given))


def ask(prompt: str, params: list[str] | None = None) -> dict[str, Any]:
    return {"notification": {"prompt": prompt, "params": params or []}}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "answer is not JSON (it starts with 'not json')"),
        (b"[1]", "answer must be a JSON object, not list"),
        ({"notification": "hi"}, "notification: must be an object with 'prompt' and 'params'"),
        ({"notification": {"prompt": 5}}, "notification.prompt: must be a string"),
        (ask("hello") | {"notification": {"prompt": "hello", "params": "user_name"}},
         "notification.params: must be a list of scope names (strings)"),
        ({"notification": {"prompt": "hello", "context": 5}},
         "notification.context: must be an object with 'question' and 'filters'"),
        ({"message": 7}, "message: must be a string"),
    ],
)  # fmt: skip
def test_an_answer_that_breaks_a_rule_is_invalid(body: Any, error: str) -> None:
    assert decide(body) == Plan("invalid", Refusal("invalid_answer", error))


@pytest.mark.parametrize("body", [b"", b"  \n", {}, {"message": "   "}, {"other": 1}])
def test_an_empty_answer_is_no_action(body: Any) -> None:
    assert decide(body) == Plan("none", Refusal("no_action"))


def test_params_are_deduplicated_in_order() -> None:
    answer = parse_answer(
        json.dumps(ask("hello", ["user_chat", "user_name", "user_chat"])).encode()
    )
    assert answer.params == ["user_chat", "user_name"]


def test_a_prompt_needs_the_capability() -> None:
    step = decide(ask("hello there"), capabilities=("external_integration",)).proactive
    assert step is not None and step.refused is not None
    assert step.refused.outcome == "not_allowed"
    assert "lacks the 'proactive_notification' capability" in (step.refused.reason or "")
    assert step.scopes.decisions == {}


@pytest.mark.parametrize(
    ("length", "ok"), [(4, False), (5, True), (128_000, True), (128_001, False)]
)
def test_the_prompt_is_5_to_128000_characters(length: int, ok: bool) -> None:
    decided = decide(ask("x" * length))
    assert decided.kind == "proactive" and decided.proactive is not None
    refused = decided.proactive.refused
    if ok:
        assert refused is None
    else:
        reason = f"notification.prompt: {length} characters; it must be 5 to 128,000"
        assert refused == Refusal("invalid_answer", reason)


def test_a_scope_counts_when_listed_declared_and_granted() -> None:
    prompt = "{{user_chat}} {{user_name}} {{user_facts}} {{user_context}} {{other}}"
    params = ["user_name", "user_facts", "user_context", "user_soul"]
    step = decide(
        ask(prompt, params),
        manifest_scopes=("user_name", "user_facts", "user_chat"),
        granted=("user_name", "user_context", "user_chat"),
    ).proactive
    assert step is not None and step.refused is None
    assert step.scopes.decisions == {
        "user_soul": "unknown scope: ignored (scopes are user_name, user_facts, user_context, "
        "user_chat)",
        "user_name": "filled",
        "user_facts": "not granted by the user",
        "user_context": "not in the manifest's proactive_notification.scopes",
        "user_chat": "not listed in notification.params",
    }
    assert step.scopes.effective == ["user_name"]
    assert "user_soul" not in step.scopes.reasons and "user_chat" in step.scopes.reasons


def test_the_context_read_is_the_counting_scopes_the_prompt_uses_in_order() -> None:
    step = decide(ask("{{user_facts}} then {{ user_name }}", list(ALL))).proactive
    assert step is not None
    assert step.scopes.effective == ["user_name", "user_facts", "user_context", "user_chat"]
    assert step.scopes.wanted == ["user_facts", "user_name"]


def test_one_proactive_notification_per_interval() -> None:
    assert next_slot(30, None, 100) == 0.0
    assert next_slot(30, 100, 112) == 18.0
    assert next_slot(30, 100, 130) == 0.0
    limited = decide(ask("hi {{user_name}}", ["user_name"]), last_sent_at=100.0, now=112.0)
    step = limited.proactive
    assert step is not None and step.refused == rate_limited(30, 18)
    assert step.refused.reason == (
        "one proactive notification per user per app every 30 s; next slot in 18.0 s"
    )
    assert step.scopes.decisions == {"user_name": "filled"}  # what it would have filled
    free = decide(ask("hello there"), last_sent_at=100.0, now=130.0).proactive
    assert free is not None and free.refused is None


@pytest.mark.parametrize(
    ("text", "kind", "refused"),
    [
        ("hi yo", "transcript_processed", "message: must be over 5 characters; ignored"),
        ("  hi yo  ", "transcript_processed", "message: must be over 5 characters; ignored"),
        ("hi you", "transcript_processed", None),
        ("hi", "memory_creation", None),
        ("x" * 101, "memory_creation", "message: 101 characters is over the limit of 100"),
    ],
)
def test_a_message_is_over_5_characters_unless_from_memory_creation(
    text: str, kind: str, refused: str | None
) -> None:
    said = decide({"message": text}, kind=kind).message
    assert said is not None
    if refused is None:
        assert said.text == text and said.refused is None
    else:
        assert said.refused == Refusal("message_refused", refused)


def test_an_answer_with_both_gets_both() -> None:
    decided = decide(ask("hello there") | {"message": "and hello again"})
    assert decided.kind == "proactive" and decided.refused is None
    assert decided.proactive is not None and decided.proactive.refused is None
    assert decided.message is not None and decided.message.text == "and hello again"
    only = decide({"message": "and hello again"})
    assert only.kind == "message" and only.proactive is None


def test_what_the_model_decided_is_sent_or_held_with_why() -> None:
    assert generated("send", "") is None
    assert generated("quiet", "the model answered 'SKIP'") == Refusal(
        "quiet", "the model answered 'SKIP'"
    )
    assert generated("held", "the critic stage rejected it") == Refusal(
        "held", "the critic stage rejected it"
    )
