"""The webhook kit over real HTTP (httpx ASGITransport), signed with the standardwebhooks package
itself, as the platform signs."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from nudge.sdk.webhook import (
    Answer,
    LRUCache,
    MemoryEvent,
    Segment,
    SessionStore,
    TranscriptEvent,
    WebhookKit,
    message,
    nothing,
    proactive,
    signature_headers,
)
from tests.sdk.scripted import over_asgi

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
MENTOR_PROMPT = (
    "You are mentoring {{user_name}}. Based on {{user_facts}} and {{user_context}}, advise."
)


def signed(body: bytes, secret: str = SECRET, *, age_s: float = 0.0) -> dict[str, str]:
    msg_id = f"msg_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(time.time() - age_s, tz=UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, body.decode()),
        "content-type": "application/json",
    }


def realtime_body(session_id: str, *texts: str) -> bytes:
    segments = [
        {
            "text": t,
            "speaker": "SPEAKER_01",
            "speaker_id": 1,
            "is_user": False,
            "start": i,
            "end": i,
        }
        for i, t in enumerate(texts)
    ]
    return json.dumps({"session_id": session_id, "segments": segments}).encode()


class Recorder:
    """A mentor-like handler that records what it was handed."""

    def __init__(self) -> None:
        self.events: list[TranscriptEvent] = []
        self.fail_next = False

    def __call__(self, event: TranscriptEvent) -> Answer | None:
        self.events.append(event)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("database down")
        if event.matches(["what do you think", "any advice"]):
            return proactive(MENTOR_PROMPT)
        return None


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def kit(recorder: Recorder) -> WebhookKit:
    return WebhookKit(SECRET, on_transcript=recorder, sessions=SessionStore(max_sessions=50))


@pytest.fixture
async def http(kit: WebhookKit) -> AsyncIterator[httpx.AsyncClient]:
    async with over_asgi(kit.app()) as c:
        yield c


async def post(
    http: httpx.AsyncClient,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    uid: str = "user123",
    path: str = "/webhook",
) -> httpx.Response:
    params = {"uid": uid}
    if path == "/webhook":
        params["session_id"] = json.loads(body).get("session_id", "")
    return await http.post(path, params=params, content=body, headers=headers or signed(body))


# --- signatures ----------------------------------------------------------------------------


async def test_signed_call_is_handled(http: httpx.AsyncClient, recorder: Recorder) -> None:
    r = await post(http, realtime_body("s1", "What do you think about this approach?"))
    assert r.status_code == 200
    assert r.json() == {
        "session_id": "s1",
        "notification": {
            "prompt": MENTOR_PROMPT,
            "params": ["user_name", "user_facts", "user_context"],
        },
    }
    assert [s.text for s in recorder.events[0].segments] == [
        "What do you think about this approach?"
    ]
    assert recorder.events[0].uid == "user123"


@pytest.mark.parametrize(
    "tamper",
    ["missing", "wrong-secret", "stale", "future", "body-changed", "garbage-signature", "bad-ts"],
)
async def test_bad_signature_is_401_and_never_reaches_the_app(
    http: httpx.AsyncClient, recorder: Recorder, tamper: str
) -> None:
    body = realtime_body("s1", "what do you think")
    other = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    headers = {
        "missing": {"content-type": "application/json"},
        "wrong-secret": signed(body, other),
        "stale": signed(body, age_s=600),
        "future": signed(body, age_s=-600),
        "body-changed": signed(realtime_body("s1", "hello")),
        "garbage-signature": signed(body) | {"webhook-signature": "v1,%%%not-base64"},
        "bad-ts": signed(body) | {"webhook-timestamp": "yesterday"},
    }[tamper]
    r = await post(http, body, headers)
    assert r.status_code == 401
    assert "signature" in r.json()["detail"]
    assert recorder.events == []


async def test_invalid_payloads_are_422(http: httpx.AsyncClient, recorder: Recorder) -> None:
    not_json = b"{not json"
    r = await http.post(
        "/webhook", params={"uid": "u1"}, content=not_json, headers=signed(not_json)
    )
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    no_session = json.dumps({"segments": []}).encode()
    r = await http.post(
        "/webhook", params={"uid": "u1"}, content=no_session, headers=signed(no_session)
    )
    assert r.status_code == 422 and "session_id" in r.json()["detail"]
    body = realtime_body("s1", "hi")
    r = await http.post("/webhook", params={"session_id": "s1"}, content=body, headers=signed(body))
    assert r.status_code == 422 and "uid" in r.json()["detail"]
    r = await http.post(
        "/webhook", params={"session_id": "s2", "uid": "u1"}, content=body, headers=signed(body)
    )
    assert r.status_code == 422 and "disagree" in r.json()["detail"]
    assert recorder.events == []


async def test_oversized_body_is_413(recorder: Recorder) -> None:
    kit = WebhookKit(SECRET, on_transcript=recorder, max_body_bytes=1000)
    body = realtime_body("s1", "x" * 2000)
    async with over_asgi(kit.app()) as http:
        r = await post(http, body)
    assert r.status_code == 413 and recorder.events == []


def test_secret_must_be_a_webhook_secret() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        WebhookKit("sk_" + "a" * 32, on_transcript=lambda e: None)


# --- accumulation --------------------------------------------------------------------------


async def test_segments_accumulate_and_old_text_never_retriggers(
    http: httpx.AsyncClient, recorder: Recorder
) -> None:
    answers = []
    for texts in [
        ("Hi, I have been thinking about my marathon plan.",),
        ("So, what do you think?", "Should I run every day?"),
        ("Anyway, let's talk about lunch.",),
        ("Sounds good.",),
    ]:
        r = await post(http, realtime_body("s1", *texts))
        assert r.status_code == 200
        answers.append("notification" in r.json())
    assert answers == [False, True, False, False]
    # Each call hands over only the new segments, the earlier ones as context.
    assert [len(e.segments) for e in recorder.events] == [1, 2, 1, 1]
    assert [len(e.context) for e in recorder.events] == [0, 1, 3, 4]
    assert recorder.events[3].transcript.startswith("Hi, I have been thinking")
    assert recorder.events[3].text == "Sounds good."


async def test_phrase_split_across_calls_triggers_once(
    http: httpx.AsyncClient, recorder: Recorder
) -> None:
    first = await post(http, realtime_body("s1", "Tell me, what do you"))
    second = await post(http, realtime_body("s1", "think about it?"))
    third = await post(http, realtime_body("s1", "ok"))
    assert "notification" not in first.json()
    assert "notification" in second.json()
    assert "notification" not in third.json()


async def test_sessions_and_users_are_kept_apart(
    http: httpx.AsyncClient, recorder: Recorder
) -> None:
    await post(http, realtime_body("s1", "one"), uid="ana")
    await post(http, realtime_body("s1", "two"), uid="bob")
    await post(http, realtime_body("s2", "three"), uid="ana")
    await post(http, realtime_body("s1", "four"), uid="ana")
    assert [(e.uid, e.session_id, e.context) for e in recorder.events[:3]] == [
        ("ana", "s1", ()),
        ("bob", "s1", ()),
        ("ana", "s2", ()),
    ]
    assert [s.text for s in recorder.events[3].context] == ["one"]


async def test_replayed_webhook_id_gets_the_first_answer(
    http: httpx.AsyncClient, recorder: Recorder
) -> None:
    body = realtime_body("s1", "any advice?")
    headers = signed(body)
    first = await post(http, body, headers)
    again = await post(http, body, headers)
    assert first.json() == again.json() and "notification" in first.json()
    assert len(recorder.events) == 1
    later = await post(http, realtime_body("s1", "thanks"))
    assert "notification" not in later.json()
    assert [len(e.context) for e in recorder.events] == [0, 1]  # the replay added nothing


async def test_failed_handler_keeps_its_segments_for_the_next_call(
    http: httpx.AsyncClient, recorder: Recorder
) -> None:
    recorder.fail_next = True
    r = await post(http, realtime_body("s1", "what do you think?"))
    assert r.status_code == 500 and "kept" in r.json()["detail"]
    r = await post(http, realtime_body("s1", "hello?"))
    assert "notification" in r.json()
    assert [s.text for s in recorder.events[1].segments] == ["what do you think?", "hello?"]


async def test_empty_segments_answer_nothing_without_calling_the_app(
    http: httpx.AsyncClient, recorder: Recorder
) -> None:
    r = await post(http, realtime_body("s1", "  "))
    assert r.json() == {"session_id": "s1"} and recorder.events == []


async def test_async_handler_and_direct_message() -> None:
    async def handler(event: TranscriptEvent) -> Answer:
        return message(f"You said: {event.text}") if event.text else nothing()

    kit = WebhookKit(SECRET, on_transcript=handler)
    async with over_asgi(kit.app()) as http:
        r = await post(http, realtime_body("s9", "hello world"))
    assert r.json() == {"session_id": "s9", "message": "You said: hello world"}


async def test_handler_returning_the_wrong_type_is_a_500() -> None:
    kit = WebhookKit(SECRET, on_transcript=lambda e: {"message": "not an Answer"})  # type: ignore
    async with over_asgi(kit.app()) as http:
        r = await post(http, realtime_body("s1", "hello"))
    assert r.status_code == 500 and "TypeError" in r.json()["detail"]


# --- bounded memory ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_least_recently_active_session_is_dropped(recorder: Recorder) -> None:
    store = SessionStore(max_sessions=2)
    kit = WebhookKit(SECRET, on_transcript=recorder, sessions=store)
    async with over_asgi(kit.app()) as http:
        await post(http, realtime_body("a", "first a"))
        await post(http, realtime_body("b", "first b"))
        await post(http, realtime_body("a", "second a"))  # a is now the most recent
        await post(http, realtime_body("c", "first c"))  # drops b
        assert len(store) == 2
        assert ("user123", "b") not in store and ("user123", "a") in store
        await post(http, realtime_body("b", "second b"))
    assert recorder.events[-1].context == ()  # b started over


async def test_idle_sessions_expire(recorder: Recorder) -> None:
    clock = Clock()
    store = SessionStore(ttl_s=60, clock=clock)
    kit = WebhookKit(SECRET, on_transcript=recorder, sessions=store)
    async with over_asgi(kit.app()) as http:
        await post(http, realtime_body("s1", "hello"))
        clock.now += 30
        await post(http, realtime_body("s1", "still here"))
        assert [s.text for s in recorder.events[-1].context] == ["hello"]
        clock.now += 61
        assert len(store) == 0
        await post(http, realtime_body("s1", "back again"))
    assert recorder.events[-1].context == ()


async def test_segments_per_session_are_capped(recorder: Recorder) -> None:
    store = SessionStore(max_segments=3)
    kit = WebhookKit(SECRET, on_transcript=recorder, sessions=store)
    async with over_asgi(kit.app()) as http:
        for i in range(6):
            await post(http, realtime_body("s1", f"line {i}"))
        await post(http, realtime_body("s1", *[f"burst {i}" for i in range(5)]))
    last = recorder.events[-1]
    assert [s.text for s in last.context] == ["line 3", "line 4", "line 5"]
    assert [s.text for s in last.segments] == ["burst 2", "burst 3", "burst 4"]


def test_lru_cache_bounds_and_expiry() -> None:
    clock = Clock()
    cache: LRUCache[str, int] = LRUCache(max_items=3, ttl_s=10, clock=clock)
    for i, key in enumerate("abcd"):
        cache.put(key, i)
    assert list(cache.keys()) == ["b", "c", "d"]
    assert cache.get("b") == 1  # touched: now the most recent
    cache.put("e", 4)
    assert list(cache.keys()) == ["d", "b", "e"]
    clock.now += 11
    assert len(cache) == 0 and cache.get("e") is None


# --- matching and answers ------------------------------------------------------------------


def event(new: list[str], context: list[str] | None = None) -> TranscriptEvent:
    def segs(texts: list[str]) -> tuple[Segment, ...]:
        return tuple(Segment(text=t) for t in texts)

    return TranscriptEvent("u", "s", segs(new), segs(context or []))


@pytest.mark.parametrize(
    ("new", "context", "found"),
    [
        (["What do you THINK?"], [], ["what do you think"]),
        (["what, do you think"], [], ["what do you think"]),
        (["Do you have any advice"], [], ["any advice"]),
        (["many advices here"], [], []),  # whole words only
        (["think about it"], ["so what do you"], ["what do you think"]),
        (["ok"], ["what do you think"], []),  # already handled
        (["we only use 10% of our brain"], [], ["10% of our brain"]),
    ],
)
def test_matches(new: list[str], context: list[str], found: list[str]) -> None:
    phrases = ["what do you think", "any advice", "10% of our brain"]
    assert event(new, context).matches(phrases) == found


def test_answers() -> None:
    assert proactive("Hi {{ user_name }}, about {{user_context}}: advise").body["notification"][
        "params"
    ] == ["user_name", "user_context"]
    assert proactive("Just say hi to them", params=[]).body["notification"]["params"] == []
    with pytest.raises(ValueError, match="params"):
        proactive("Tell {{user_secrets}} something")
    with pytest.raises(ValueError, match="prompt"):
        proactive("hi")
    with pytest.raises(ValueError, match="message"):
        message("hey")
    assert message("Drink some water").body == {"message": "Drink some water"}
    assert nothing().body == {}


# --- memory creation -----------------------------------------------------------------------


async def test_memory_creation_call() -> None:
    seen: list[MemoryEvent] = []

    def on_memory(e: MemoryEvent) -> Answer:
        seen.append(e)
        return message(f"Saved: {e.conversation.structured.title}")

    kit = WebhookKit(SECRET, on_memory=on_memory)
    conversation: dict[str, Any] = {
        "id": "conv_1",
        "created_at": "2026-01-01T10:00:00Z",
        "started_at": "2026-01-01T09:30:00Z",
        "finished_at": "2026-01-01T10:00:00Z",
        "transcript_segments": [{"text": "Let's plan the race.", "speaker": "SPEAKER_00"}],
        "structured": {"title": "Race plan", "overview": "Planning the marathon."},
    }
    body = json.dumps(conversation).encode()
    async with over_asgi(kit.app()) as http:
        headers = signed(body)
        r = await post(http, body, headers, path="/memory")
        again = await post(http, body, headers, path="/memory")
        bad = await post(http, body, signed(body, age_s=900), path="/memory")
        no_transcripts = await post(http, realtime_body("s1", "hi"))
    assert r.status_code == 200 and r.json() == {"message": "Saved: Race plan"}
    assert again.json() == r.json() and len(seen) == 1
    assert seen[0].uid == "user123" and seen[0].transcript == "Let's plan the race."
    assert bad.status_code == 401
    assert no_transcripts.status_code == 404  # this kit has no transcript handler


def test_signature_headers_verify_with_the_library() -> None:
    body = realtime_body("s1", "hello")
    headers = signature_headers(SECRET, body)
    assert Webhook(SECRET).verify(body, headers) == json.loads(body)
