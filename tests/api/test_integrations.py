"""Omi's integration API: every endpoint's answers, the action gates, the limits (SQLite and
PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from nudge.llm import LLMError
from nudge.llm.fake import FakeLLM
from nudge.platform import Platform
from tests.api.integration_helpers import importer
from tests.conftest import make_settings
from tests.proactive.helpers import api_client, create_app, create_user, install

ALL_ACTIONS = ["create_conversation", "create_memories", "read_memories", "read_conversations"]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@dataclass
class Env:
    client: httpx.AsyncClient
    platform: Platform
    app_id: str
    secret: str
    uid: str = "ana"

    async def call(
        self,
        method: str,
        path: str,
        *,
        uid: str | None = None,
        secret: str | None = None,
        headers: dict[str, str] | None = None,
        app_id: str | None = None,
        **kw: Any,
    ) -> httpx.Response:
        """An app's call: its secret (or ``headers``, which may leave Authorization out)."""
        params = {"uid": uid or self.uid, **kw.pop("params", {})}
        request = self.client.build_request(
            method,
            path.format(app=app_id or self.app_id),
            params=params,
            headers=headers if headers is not None else bearer(secret or self.secret),
            **kw,
        )
        if headers is not None and "Authorization" not in headers:
            del request.headers["Authorization"]  # the client's default is the admin token
        return await self.client.send(request)


@pytest.fixture
async def env(tmp_path: Path, database_url: str) -> AsyncIterator[Env]:
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        integration_memories_per_hour=4,
        integration_conversations_per_hour=3,
    )
    platform = await Platform.start(settings)
    try:
        async with api_client(platform) as client:
            app = await create_app(client, importer(ALL_ACTIONS, "Importer"))
            await create_user(client, "ana", facts=["Likes tea"])
            await install(client, "ana", app["app_id"], [])
            yield Env(client, platform, app["app_id"], app["app_secret"])
    finally:
        await platform.close()


def scripted_llm(env: Env) -> FakeLLM:
    llm = env.platform.llm
    assert isinstance(llm, FakeLLM)
    return llm


MEMORIES = "/v2/integrations/{app}/user/memories"
CONVERSATIONS = "/v2/integrations/{app}/user/conversations"
LIST = "/v2/integrations/{app}/conversations"
SEARCH = "/v2/integrations/{app}/search/conversations"


async def test_explicit_memories_are_stored_listed_and_are_user_facts(env: Env) -> None:
    r = await env.call(
        "POST",
        MEMORIES,
        json={
            "memories": [
                {"content": "User is allergic to peanuts", "tags": ["health"]},
                {"content": "User's mother's birthday is on August 15th"},
            ],
            "text_source": "other",
        },
    )
    assert r.status_code == 200, r.text
    stored = r.json()["memories"]
    assert [m["content"] for m in stored] == [
        "User is allergic to peanuts",
        "User's mother's birthday is on August 15th",
    ]
    assert stored[0]["tags"] == ["health"] and stored[1]["tags"] == []
    assert {m["app_id"] for m in stored} == {env.app_id}
    assert not any(m["manually_added"] for m in stored)
    assert r.headers["X-RateLimit-Limit"] == "4"
    assert r.headers["X-RateLimit-Remaining"] == "3"
    assert 0 < int(r.headers["X-RateLimit-Reset"]) <= 3600

    listed = await env.call("GET", "/v2/integrations/{app}/memories")
    assert listed.status_code == 200, listed.text
    items = listed.json()["memories"]
    # Newest first, every memory of the user: the platform's own fact too (manually added).
    assert [m["content"] for m in items][-1] == "Likes tea"
    assert items[-1]["manually_added"] is True and "app_id" not in items[-1]
    assert {m["content"] for m in items[:2]} == {m["content"] for m in stored}
    assert items[0]["created_at"].endswith("Z")
    page = await env.call(
        "GET", "/v2/integrations/{app}/memories", params={"limit": 1, "offset": 2}
    )
    assert [m["content"] for m in page.json()["memories"]] == ["Likes tea"]

    facts = (await env.client.get("/v1/users/ana/facts")).json()["facts"]
    assert "User is allergic to peanuts" in facts


async def test_a_repeated_memory_is_not_stored_twice(env: Env) -> None:
    body = {"memories": [{"content": "User is vegetarian"}, {"content": "User is vegetarian"}]}
    first = await env.call("POST", MEMORIES, json=body)
    assert [m["content"] for m in first.json()["memories"]] == ["User is vegetarian"]
    again = await env.call("POST", "/v2/integrations/{app}/user/facts", json=body)
    assert again.status_code == 200 and again.json()["memories"] == []
    facts = (await env.client.get("/v1/users/ana/facts")).json()["facts"]
    assert facts.count("User is vegetarian") == 1


async def test_text_is_turned_into_memories_by_the_llm(env: Env) -> None:
    llm = scripted_llm(env)
    llm.reply = lambda system, prompt: (
        "- User flies to Paris on May 15th.\n"
        "2. User stays at Hotel de Paris.\n"
        "You should pack light and enjoy the trip!\n"  # not about the text: dropped
    )
    r = await env.call(
        "POST",
        MEMORIES,
        json={
            "text": "Your flight to Paris is confirmed for May 15th. Hotel de Paris: May 16-20.",
            "text_source": "email",
            "text_source_spec": "travel_confirmation",
        },
    )
    assert r.status_code == 200, r.text
    assert [m["content"] for m in r.json()["memories"]] == [
        "User flies to Paris on May 15th.",
        "User stays at Hotel de Paris.",
    ]
    system, prompt = llm.calls[-1]
    assert "travel_confirmation" in prompt and "Hotel de Paris" in prompt
    assert "facts" in system


async def test_text_falls_back_to_its_sentences_when_the_llm_fails(env: Env) -> None:
    def broken(system: str, prompt: str) -> str:
        raise LLMError("model server down")

    scripted_llm(env).reply = broken
    r = await env.call(
        "POST",
        MEMORIES,
        json={"text": "I moved to Lisbon last year. Ok. My sister Eva lives in Porto!"},
    )
    assert r.status_code == 200, r.text
    assert [m["content"] for m in r.json()["memories"]] == [
        "I moved to Lisbon last year.",
        "My sister Eva lives in Porto!",
    ]


async def test_text_falls_back_when_the_llm_says_nothing_about_it(env: Env) -> None:
    scripted_llm(env).reply = lambda system, prompt: "NONE"
    r = await env.call("POST", MEMORIES, json={"text": "The user runs every morning at seven."})
    assert [m["content"] for m in r.json()["memories"]] == ["The user runs every morning at seven."]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "text or memories"),
        ({"text": "   ", "memories": []}, "text or memories"),
        ({"memories": [{"content": "x" * 2001}]}, "memories.0.content"),
        ({"memories": [{"content": "   "}]}, "content"),
        ({"memories": [{"content": "ok fact", "tags": ["x" * 65]}]}, "tags"),
        ({"text": "hi", "text_source": "fax"}, "text_source"),
        ({"memories": "User is tall"}, "memories"),
        ({"memories": [{"content": "User is\u0000 tall"}]}, "memories.0.content"),
        ({"memories": [{"content": "User is tall", "tags": ["a\nb"]}]}, "memories.0.tags.0"),
        ('{"text": "\\ud800 text"}', "text"),  # a lone surrogate, as JSON can carry one
    ],
)
async def test_bad_memory_bodies_are_422_naming_the_field(
    env: Env, body: dict[str, Any] | str, named: str
) -> None:
    if isinstance(body, str):
        r = await env.call(
            "POST",
            MEMORIES,
            content=body,
            headers={**bearer(env.secret), "Content-Type": "application/json"},
        )
    else:
        r = await env.call("POST", MEMORIES, json=body)
    assert r.status_code == 422, r.text
    assert named in r.json()["detail"]
    facts = (await env.client.get("/v1/users/ana/facts")).json()["facts"]
    assert facts == ["Likes tea"]


async def test_memory_imports_are_limited_per_hour_with_retry_after(env: Env) -> None:
    for n in range(4):
        r = await env.call("POST", MEMORIES, json={"memories": [{"content": f"Fact number {n}"}]})
        assert r.status_code == 200, r.text
        assert r.headers["X-RateLimit-Remaining"] == str(3 - n)
    r = await env.call("POST", MEMORIES, json={"memories": [{"content": "One too many"}]})
    assert r.status_code == 429, r.text
    assert 0 < int(r.headers["Retry-After"]) <= 3600
    assert r.headers["X-RateLimit-Remaining"] == "0"
    assert "at most 4" in r.json()["detail"]
    # Per app and user: another user of the same app is not limited, reads are not limited.
    await create_user(env.client, "ben")
    await install(env.client, "ben", env.app_id, [])
    other = await env.call(
        "POST", MEMORIES, uid="ben", json={"memories": [{"content": "Ben fact"}]}
    )
    assert other.status_code == 200
    assert (await env.call("GET", "/v2/integrations/{app}/memories")).status_code == 200
    facts = (await env.client.get("/v1/users/ana/facts")).json()["facts"]
    assert "One too many" not in facts


READS_AND_WRITES = [
    ("POST", MEMORIES, {"json": {"memories": [{"content": "User likes jazz"}]}}),
    ("GET", "/v2/integrations/{app}/memories", {}),
    ("POST", CONVERSATIONS, {"json": {"text": "Ana: I like jazz"}}),
    ("GET", LIST, {}),
    ("POST", SEARCH, {"json": {"query": "jazz"}}),
]


@pytest.mark.parametrize(("method", "path", "kw"), READS_AND_WRITES)
async def test_who_may_call(env: Env, method: str, path: str, kw: dict[str, Any]) -> None:
    async def status(**call: Any) -> tuple[int, str]:
        r = await env.call(method, path, **call, **kw)
        return r.status_code, r.json().get("detail", "")

    code, detail = await status(headers={})
    assert code == 401 and "Authorization" in detail
    code, detail = await status(headers={"Authorization": "Basic abc"})
    assert code == 401
    code, detail = await status(secret="sk_" + "0" * 32)
    assert code == 403 and "invalid API key" in detail
    code, detail = await status(secret="not-a-key")
    assert code == 403
    code, detail = await status(app_id="app_nope")
    assert code == 404 and "app_nope" in detail
    other = await create_app(env.client, importer(ALL_ACTIONS, "Other"))
    code, detail = await status(secret=other["app_secret"])
    assert code == 403 and "another app" in detail
    code, detail = await status(uid="nobody")
    assert code == 403 and "not enabled" in detail
    await create_user(env.client, "ben")
    code, detail = await status(uid="ben")
    assert code == 403 and "not enabled" in detail
    key = (await env.client.post(f"/v1/apps/{env.app_id}/keys")).json()
    assert (await status(secret=key["app_secret"]))[0] == 200
    await env.client.delete(f"/v1/apps/{env.app_id}/keys/{key['key_id']}")
    code, detail = await status(secret=key["app_secret"])
    assert code == 403 and "revoked" in detail


async def test_uid_is_required(env: Env) -> None:
    request = env.client.build_request(
        "GET", f"/v2/integrations/{env.app_id}/memories", headers=bearer(env.secret)
    )
    r = await env.client.send(request)
    assert r.status_code == 422 and "uid" in r.json()["detail"]
    r = await env.call("GET", "/v2/integrations/{app}/memories", uid=" ")
    assert r.status_code == 422 and "uid" in r.json()["detail"]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": 10**30}, "offset"),
    ],
)
async def test_bad_pages_are_422(env: Env, params: dict[str, Any], named: str) -> None:
    r = await env.call("GET", "/v2/integrations/{app}/memories", params=params)
    assert r.status_code == 422 and named in r.json()["detail"]


@pytest.mark.parametrize(
    ("actions", "allowed"),
    [
        (["create_memories"], {"create_memories"}),
        (["create_facts"], {"create_memories"}),
        (["read_memories"], {"read_memories"}),
        (["read_facts"], {"read_memories"}),
        (["read_tasks"], set()),
        (["create_conversation"], {"create_conversation"}),
        (["read_conversations"], {"read_conversations"}),
        (
            ["create_conversation", "read_conversations"],
            {"create_conversation", "read_conversations"},
        ),
    ],
)
async def test_each_endpoint_is_gated_by_its_action(
    env: Env, actions: list[str], allowed: set[str]
) -> None:
    app = await create_app(env.client, importer(actions, "Gated"))
    await install(env.client, env.uid, app["app_id"], [])
    calls = {
        "create_memories": ("POST", MEMORIES, {"json": {"memories": [{"content": "User sings"}]}}),
        "read_memories": ("GET", "/v2/integrations/{app}/memories", {}),
        "create_conversation": ("POST", CONVERSATIONS, {"json": {"text": "Ana: hello there"}}),
        "read_conversations": ("GET", "/v2/integrations/{app}/conversations", {}),
        "search": ("POST", SEARCH, {"json": {"query": "hello"}}),
    }
    for gate, (method, path, kw) in calls.items():
        r = await env.call(method, path, app_id=app["app_id"], secret=app["app_secret"], **kw)
        needs = "read_conversations" if gate == "search" else gate
        if needs in allowed:
            assert r.status_code == 200, (gate, r.text)
        else:
            assert r.status_code == 403, (gate, r.text)
            assert f'{{"action": "{needs}"}}' in r.json()["detail"]


V1 = "/v1/integrations/notification"


async def test_v1_notification_is_the_direct_api_with_omis_body(env: Env) -> None:
    body = {"aid": env.app_id, "uid": env.uid, "message": "Your import is done"}
    r = await env.call(
        "POST", V1, json=body, headers={**bearer(env.secret), "Idempotency-Key": "k1"}
    )
    assert r.status_code == 200, r.text
    sent = r.json()
    assert sent["status"] == "ok" and sent["devices"] == 0
    assert r.headers["X-RateLimit-Remaining"] == "9"
    again = await env.call(
        "POST", V1, json=body, headers={**bearer(env.secret), "Idempotency-Key": "k1"}
    )
    assert again.json()["notification_id"] == sent["notification_id"]
    inbox = (await env.client.get(f"/v1/users/{env.uid}/notifications")).json()["items"]
    assert [n["body"] for n in inbox] == ["Your import is done"]
    assert inbox[0]["title"] == "Importer says"


async def test_v1_notification_answers_as_omis_integration_endpoints(env: Env) -> None:
    def body(**kw: Any) -> dict[str, Any]:
        return {"aid": env.app_id, "uid": env.uid, "message": "Hi there", **kw}

    r = await env.call("POST", V1, json=body(), headers={})
    assert r.status_code == 401
    r = await env.call("POST", V1, json=body(), secret="sk_" + "1" * 32)
    assert r.status_code == 403 and "invalid API key" in r.json()["detail"]
    r = await env.call("POST", V1, json=body(aid="app_nope"))
    assert r.status_code == 404
    r = await env.call("POST", V1, json=body(uid="nobody"))
    assert r.status_code == 403 and "not enabled" in r.json()["detail"]
    for missing in ("aid", "uid", "message"):
        partial = {k: v for k, v in body().items() if k != missing}
        r = await env.call("POST", V1, json=partial)
        assert r.status_code == 422 and missing in r.json()["detail"], r.text
    r = await env.call("POST", V1, json=body(uid="ana\u0000"))
    assert r.status_code == 422 and "uid" in r.json()["detail"]
    r = await env.call("POST", V1, json=body(message="x" * 2001))
    assert r.status_code == 422 and "X-RateLimit-Limit" in r.headers
    assert (await env.client.get(f"/v1/users/{env.uid}/notifications")).json()["items"] == []


async def test_v1_notification_shares_the_direct_hourly_window(env: Env) -> None:
    r = await env.client.post(
        "/v1/apps",
        json={"manifest": importer(["read_memories"], "Chatty"), "direct_limit_per_hour": 2},
    )
    app = r.json()
    await install(env.client, env.uid, app["app_id"], [])
    direct = await env.call(
        "POST",
        "/v2/integrations/{app}/notification",
        app_id=app["app_id"],
        secret=app["app_secret"],
        params={"message": "First"},
    )
    assert direct.status_code == 200, direct.text
    body = {"aid": app["app_id"], "uid": env.uid, "message": "Second"}
    assert (await env.call("POST", V1, json=body, secret=app["app_secret"])).status_code == 200
    body["message"] = "Third"
    r = await env.call("POST", V1, json=body, secret=app["app_secret"])
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) > 0 and r.headers["X-RateLimit-Remaining"] == "0"


# --- Conversations --------------------------------------------------------------------------


async def import_text(env: Env, text: str, **fields: Any) -> dict[str, Any]:
    r = await env.call("POST", CONVERSATIONS, json={"text": text, **fields})
    assert r.status_code == 200, r.text
    conversation: dict[str, Any] = r.json()["conversation"]
    return conversation


async def test_an_imported_conversation_is_stored_as_omi_keeps_it(env: Env) -> None:
    r = await env.call(
        "POST",
        CONVERSATIONS,
        json={
            "text": "John: Hi Sarah, how was your weekend?\n\nSarah: Great! I went hiking.",
            "text_source": "audio_transcript",
            "text_source_spec": "phone_call",
            "started_at": "2024-07-21T22:34:43.384323+00:00",
            "geolocation": {"latitude": 37.7749, "longitude": -122.4194},
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["X-RateLimit-Limit"] == "3" and r.headers["X-RateLimit-Remaining"] == "2"
    conv = r.json()["conversation"]
    assert conv["source"] == "external_integration" and conv["app_id"] == env.app_id
    assert conv["created_at"] == conv["started_at"] == "2024-07-21T22:34:43.384323Z"
    assert conv["finished_at"] == "2024-07-21T22:39:43.384323Z"  # Omi: started_at + 5 minutes
    assert conv["language"] == "en" and conv["discarded"] is False
    assert conv["geolocation"] == {"latitude": 37.7749, "longitude": -122.4194}
    assert conv["structured"]["title"] == "John: Hi Sarah, how was your weekend?"
    assert conv["transcript_segments"] == []
    data = conv["external_data"]
    assert data["text"].startswith("John: Hi Sarah") and data["text_source_spec"] == "phone_call"
    assert data["source"] == "external_integration" and data["app_id"] == env.app_id

    listed = (await env.call("GET", LIST)).json()["conversations"]
    assert [c["id"] for c in listed] == [conv["id"]]


async def test_segments_are_kept_and_listed_up_to_the_limit(env: Env) -> None:
    segments = [
        {
            "text": f"line {n}",
            "speaker": f"SPEAKER_0{n % 2}",
            "is_user": n % 2 == 0,
            "start": float(n),
            "end": n + 0.5,
        }
        for n in range(5)
    ]
    conv = (
        await env.call(
            "POST",
            CONVERSATIONS,
            json={
                "transcript_segments": segments,
                "started_at": "2024-03-01T10:00:00Z",
                "finished_at": "2024-03-01T10:20:00Z",
                "language": "pt",
            },
        )
    ).json()["conversation"]
    assert [s["text"] for s in conv["transcript_segments"]] == [f"line {n}" for n in range(5)]
    assert conv["transcript_segments"][1] == {
        "text": "line 1",
        "speaker": "SPEAKER_01",
        "speaker_id": 1,
        "is_user": False,
        "start": 1.0,
        "end": 1.5,
    }
    assert conv["language"] == "pt" and conv["finished_at"] == "2024-03-01T10:20:00Z"
    for limit, expected in ((2, 2), (-1, 5), (0, 0)):
        listed = await env.call("GET", LIST, params={"max_transcript_segments": limit})
        (item,) = listed.json()["conversations"]
        assert len(item.get("transcript_segments", [])) == expected


async def test_listing_filters_and_pages(env: Env) -> None:
    for day in ("2024-01-05", "2024-02-10", "2024-03-15"):
        await import_text(env, f"Notes from {day}", started_at=f"{day}T12:00:00Z")
    # A live conversation of the user, streamed on the platform API: listed as in_progress.
    r = await env.client.post(
        "/v1/users/ana/sessions/s1/segments",
        json={"segments": [{"text": "live talk", "speaker": "SPEAKER_00", "is_user": True}]},
    )
    assert r.status_code == 202, r.text

    async def titles(**params: Any) -> list[str]:
        r = await env.call("GET", LIST, params=params)
        assert r.status_code == 200, r.text
        return [c["structured"]["title"] for c in r.json()["conversations"]]

    everything = await titles()
    assert everything[1:] == [
        "Notes from 2024-03-15",
        "Notes from 2024-02-10",
        "Notes from 2024-01-05",
    ]
    assert await titles(statuses="in_progress") == [everything[0]]
    # Imports are processing until the dispatcher sent their memory webhooks, then completed.
    assert len(await titles(statuses=["processing", "completed"])) == 3
    assert await titles(statuses="failed") == []
    assert await titles(start_date="2024-02-10", end_date="2024-02-10") == ["Notes from 2024-02-10"]
    assert await titles(end_date="2024-02-10T11:59:59Z") == ["Notes from 2024-01-05"]
    assert await titles(limit=1, offset=2) == ["Notes from 2024-02-10"]
    for field in ("start_date", "end_date"):
        r = await env.call("GET", LIST, params={field: "yesterday"})
        assert r.status_code == 422 and field in r.json()["detail"]


async def test_search_finds_every_word_newest_first_with_pages(env: Env) -> None:
    await import_text(
        env, "We planned the marathon training in Lisbon", started_at="2024-01-01T08:00:00Z"
    )
    await import_text(env, "Marathon shoes were too small", started_at="2024-02-01T08:00:00Z")
    await import_text(env, "Dinner with Eva", started_at="2024-03-01T08:00:00Z")

    async def search(**body: Any) -> dict[str, Any]:
        r = await env.call("POST", SEARCH, json=body)
        assert r.status_code == 200, r.text
        found: dict[str, Any] = r.json()
        return found

    found = await search(query="marathon")
    assert [c["structured"]["title"] for c in found["conversations"]] == [
        "Marathon shoes were too small",
        "We planned the marathon training in Lisbon",
    ]
    assert (found["total_pages"], found["current_page"], found["per_page"]) == (1, 1, 10)
    assert len((await search(query="marathon Lisbon"))["conversations"]) == 1
    assert (await search(query="tennis"))["conversations"] == []
    nothing = await search(query="  ")
    assert nothing["conversations"] == [] and nothing["total_pages"] == 1
    browse = await search(query="", start_date="2024-02-01", end_date="2024-03-31")
    assert len(browse["conversations"]) == 2
    paged = await search(query="marathon", per_page=1, page=2)
    assert [c["structured"]["title"] for c in paged["conversations"]] == [
        "We planned the marathon training in Lisbon"
    ]
    assert (paged["total_pages"], paged["current_page"], paged["per_page"]) == (2, 2, 1)
    clamped = await search(query="marathon", per_page=100_000, page=-3)
    assert (clamped["current_page"], clamped["per_page"]) == (1, 250)
    far = await search(query="marathon", page=10**30)
    assert far["conversations"] == [] and far["current_page"] == 1_000_000
    r = await env.call("POST", SEARCH, json={"query": "x", "start_date": "2024-13-01"})
    assert r.status_code == 422 and "start_date" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "text or transcript_segments"),
        ({"text": "   "}, "text or transcript_segments"),
        ({"transcript_segments": []}, "text or transcript_segments"),
        (
            {
                "text": "hi",
                "started_at": "2024-01-02T00:00:00Z",
                "finished_at": "2024-01-01T00:00:00Z",
            },
            "finished_at",
        ),
        ({"text": "hi", "geolocation": {"latitude": 100, "longitude": 0}}, "geolocation.latitude"),
        ({"text": "hi", "text_source": "fax"}, "text_source"),
        ({"text": "hi", "started_at": "last week"}, "started_at"),
        ({"text": "hi", "started_at": "0001-01-01T00:00:00+01:00"}, "started_at"),
        ({"text": "hi", "finished_at": "9999-12-31T23:59:59Z"}, "finished_at"),
        ({"transcript_segments": [{"text": ""}]}, "transcript_segments.0.text"),
        ({"text": "hi\x00"}, "text"),
    ],
)
async def test_bad_conversation_bodies_are_422_naming_the_field(
    env: Env, body: dict[str, Any], named: str
) -> None:
    r = await env.call("POST", CONVERSATIONS, json=body)
    assert r.status_code == 422, r.text
    assert named in r.json()["detail"]
    assert (await env.call("GET", LIST)).json()["conversations"] == []


async def test_conversation_imports_are_limited_per_hour(env: Env) -> None:
    for n in range(3):
        await import_text(env, f"Import number {n}")
    r = await env.call("POST", CONVERSATIONS, json={"text": "One import too many"})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert len((await env.call("GET", LIST)).json()["conversations"]) == 3
