"""The SDK's integration-API calls against a real ``nudge serve`` process: an app imports a
conversation and memories and gets them back in its own proactive prompt; errors; which calls
are retried (an import never is, unless nothing happened)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from nudge.sdk import (
    AsyncNudgeClient,
    NotFoundError,
    NudgeClient,
    PermissionDeniedError,
    RetryPolicy,
    ServerError,
    ValidationError,
)
from tests.conftest import ServeASGI, Server, wait_for
from tests.sdk.scripted import Reply, ScriptedServer

FAST = RetryPolicy(base_delay_s=0.05, max_delay_s=0.2, total_timeout_s=20.0)
SCOPES = ["user_name", "user_facts", "user_context"]
ACTIONS = ["create_conversation", "create_memories", "read_memories", "read_conversations"]
PROMPT = "Coach {{user_name}}. Known: {{user_facts}}. Before: {{user_context}}"


def coach_app() -> FastAPI:
    """The app's own webhook: asked for advice, it answers with a prompt of the user's data."""
    api = FastAPI()

    @api.post("/webhook")
    async def webhook(request: Request) -> dict[str, Any]:
        body = await request.json()
        said = " ".join(s["text"] for s in body["segments"]).lower()
        if "what do you think" not in said:
            return {"session_id": body["session_id"]}
        return {
            "session_id": body["session_id"],
            "notification": {"prompt": PROMPT, "params": SCOPES},
        }

    return api


async def new_app(
    admin: httpx.AsyncClient, actions: list[str], webhook: str | None = None
) -> tuple[dict[str, Any], str]:
    """An app with these actions (and a proactive webhook), and a user who installed it."""
    integration: dict[str, Any] = {"actions": [{"action": a} for a in actions]}
    manifest: dict[str, Any] = {"name": "Coach", "capabilities": ["external_integration"]}
    if webhook:
        integration |= {"triggers_on": "transcript_processed", "webhook_url": webhook}
        manifest["capabilities"].append("proactive_notification")
        manifest["proactive_notification"] = {"scopes": SCOPES}
    manifest["external_integration"] = integration
    r = await admin.post("/v1/apps", json={"manifest": manifest})
    assert r.status_code == 201, r.text
    app = r.json()
    uid = f"u_{uuid.uuid4().hex[:10]}"
    assert (await admin.post("/v1/users", json={"uid": uid, "name": "Ana"})).status_code == 201
    r = await admin.post(
        f"/v1/users/{uid}/apps/{app['app_id']}", json={"scopes": SCOPES if webhook else []}
    )
    assert r.status_code == 200, r.text
    return app, uid


async def test_an_app_imports_then_gets_it_back_in_its_proactive_prompt(
    nudge: Server, admin: httpx.AsyncClient
) -> None:
    async with ServeASGI(coach_app()) as served:
        app, uid = await new_app(admin, ACTIONS, served.url + "/webhook")
        async with AsyncNudgeClient(nudge.url, app["app_id"], app["app_secret"], retry=FAST) as sdk:
            stored = await sdk.create_memories(
                uid,
                memories=[
                    "Ana trains for the Lisbon marathon",
                    {"content": "Ana is vegetarian", "tags": ["food"]},
                ],
            )
            assert [m.content for m in stored] == [
                "Ana trains for the Lisbon marathon",
                "Ana is vegetarian",
            ]
            assert stored[1].tags == ["food"] and stored[0].app_id == app["app_id"]
            conversation = await sdk.create_conversation(
                uid,
                "Coach: keep your long runs slow, about six minutes per kilometre.",
                text_source="message",
                started_at="2024-05-01T07:00:00Z",
            )
            assert conversation.source == "external_integration"
            assert conversation.started_at is not None and conversation.started_at.year == 2024

            memories = await sdk.list_memories(uid)
            assert {m.content for m in memories} == {m.content for m in stored}
            listed = await sdk.list_conversations(uid)
            assert [c.id for c in listed] == [conversation.id]
            page = await sdk.search_conversations(uid, "kilometre")
            assert [c.id for c in page.conversations] == [conversation.id]
            assert (page.current_page, page.total_pages) == (1, 1)

        # The user talks; the app's webhook asks for advice; the prompt carries the imports.
        r = await admin.post(
            f"/v1/users/{uid}/sessions/live/segments",
            json={
                "segments": [
                    {"text": "My long runs feel hard. What do you think?", "is_user": True}
                ]
            },
        )
        assert r.status_code == 202, r.text

        async def notified() -> list[dict[str, Any]] | None:
            traces = (await admin.get(f"/v1/apps/{app['app_id']}/traces")).json()["items"]
            done = [t for t in traces if t["outcome"] == "notified"]
            return done or None

        (trace,) = await wait_for(notified, timeout=20)
        filled = trace["prompt"]["filled"]
        assert "Ana trains for the Lisbon marathon" in filled and "Ana is vegetarian" in filled
        assert "six minutes per kilometre" in filled
        inbox = (await admin.get(f"/v1/users/{uid}/notifications")).json()["items"]
        assert [n["app_id"] for n in inbox] == [app["app_id"]]


async def test_errors_are_the_sdks_exceptions(nudge: Server, admin: httpx.AsyncClient) -> None:
    app, uid = await new_app(admin, ["read_memories"])
    with NudgeClient(nudge.url, app["app_id"], app["app_secret"], retry=FAST) as sdk:
        with pytest.raises(PermissionDeniedError, match="create_conversation") as denied:
            sdk.create_conversation(uid, "hello there")
        assert denied.value.status_code == 403 and denied.value.attempts == 1
        with pytest.raises(PermissionDeniedError, match="not enabled"):
            sdk.list_memories("nobody")
        with pytest.raises(ValidationError, match="limit"):
            sdk.list_memories(uid, limit=0)
    with (
        NudgeClient(nudge.url, "app_nope", app["app_secret"], retry=FAST) as sdk,
        pytest.raises(NotFoundError),
    ):
        sdk.list_memories(uid)


async def test_an_import_is_not_retried_after_a_server_error(
    nudge: Server, admin: httpx.AsyncClient
) -> None:
    """The proxy's 503 may hide a stored import: retrying could store it twice."""
    app, uid = await new_app(admin, ACTIONS)
    script = [Reply(forward=True, status=503, body={"detail": "upstream reset"})]
    with (
        ScriptedServer(script, upstream=nudge.url) as proxy,
        NudgeClient(proxy.url, app["app_id"], app["app_secret"], retry=FAST) as sdk,
    ):
        with pytest.raises(ServerError):
            sdk.create_conversation(uid, "Only once, please")
        assert len(proxy.seen) == 1
        proxy.script.append(Reply(503, {"detail": "busy"}))  # a read is retried
        assert [c.external_data["text"] for c in sdk.list_conversations(uid)] == [
            "Only once, please"
        ]  # type: ignore[index]
        assert len(proxy.seen) == 3


def test_an_import_is_retried_after_a_429() -> None:
    conversation = {
        "id": "c1",
        "created_at": "2024-01-01T00:00:00Z",
        "source": "external_integration",
        "structured": {"title": "t", "overview": ""},
    }
    script = [
        Reply(429, {"detail": "slow down"}, {"Retry-After": "1"}),
        Reply(200, {"conversation": conversation}),
    ]
    with ScriptedServer(script) as server:
        client = NudgeClient(server.url, "app1", "sk_" + "a" * 32, retry=FAST)
        created = client.create_conversation("user123", "hello there")
    assert created.id == "c1" and len(server.seen) == 2
