"""The news checker: myths corrected directly (in the answer, or through the SDK client against a
real platform), topics and claims handed to the platform's LLM as a prompt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from examples.common import AppSettings
from examples.news_checker.app import PARAMS, create_app
from examples.news_checker.checks import MYTHS

from nudge.sdk.webhook import signature_headers
from tests.conftest import ADMIN, make_world, start_server, wait_for
from tests.examples.conftest import (
    behind_platform,
    example,
    post_segments,
    realtime_call,
    segments_body,
)
from tests.sdk.scripted import over_asgi

GREAT_WALL = next(m for m in MYTHS if m.key == "great-wall")


@pytest.fixture
async def checker() -> AsyncIterator[httpx.AsyncClient]:
    async with example(create_app) as http:
        yield http


async def test_myth_is_corrected_with_a_direct_message(checker: httpx.AsyncClient) -> None:
    r = await realtime_call(
        checker, "s1", "Did you know the Great Wall of China is visible from space?"
    )
    assert r.status_code == 200
    assert r.json() == {"session_id": "s1", "message": GREAT_WALL.correction}


@pytest.mark.parametrize(
    ("text", "about"),
    [
        ("The election results were rigged, everyone says so.", "elections"),
        ("Inflation is at fifty percent and the vaccine rollout failed", "public health"),
        ("Studies show that coffee cures headaches.", "a factual claim"),
    ],
)
async def test_topics_and_claims_become_a_fact_check_prompt(
    checker: httpx.AsyncClient, text: str, about: str
) -> None:
    r = await realtime_call(checker, "s1", text)
    notification = r.json()["notification"]
    assert about in notification["prompt"]
    assert notification["params"] == list(PARAMS)
    assert "{{user_context}}" in notification["prompt"]


async def test_small_talk_and_old_words_answer_nothing(checker: httpx.AsyncClient) -> None:
    assert (await realtime_call(checker, "s1", "Nice weather today.")).json() == {
        "session_id": "s1"
    }
    first = await realtime_call(checker, "s1", "Lightning never strikes the same place twice.")
    again = await realtime_call(checker, "s1", "Right, anyway.")
    assert "message" in first.json()
    assert again.json() == {"session_id": "s1"}


async def test_corrections_go_through_the_sdk_client(tmp_path: Path) -> None:
    """With API credentials the checker sends the correction itself; a replayed platform call
    does not send it twice."""
    server = start_server(tmp_path)
    try:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as admin:
            world = await make_world(admin)
            settings = AppSettings(world.webhook_secret, server.url, world.app_id, world.app_secret)
            app = create_app(settings)
            body = segments_body("s1", "We only use 10% of our brain, right?")
            headers = {"content-type": "application/json"} | signature_headers(
                world.webhook_secret, body
            )
            async with (
                app.router.lifespan_context(app),
                over_asgi(app) as http,
            ):
                params = {"session_id": "s1", "uid": world.uid}
                r = await http.post("/webhook", params=params, content=body, headers=headers)
                replay = await http.post("/webhook", params=params, content=body, headers=headers)
            assert r.json() == {"session_id": "s1"} and replay.json() == r.json()

            async def inbox() -> list[dict[str, object]]:
                got = await admin.get(f"/v1/users/{world.uid}/notifications")
                return list(got.json()["items"])

            items = await wait_for(inbox)
            assert [n["body"] for n in items] == [
                next(m for m in MYTHS if m.key == "ten-percent-brain").correction
            ]
            assert items[0]["app_id"] == world.app_id
    finally:
        server.stop()


async def test_myth_heard_by_the_platform_reaches_the_user(tmp_path: Path) -> None:
    """The news checker as a process behind ``nudge serve``: its ``message`` answer becomes a
    notification from the app."""
    manifest = {"name": "News checker", "capabilities": ["external_integration"]}
    lightning = next(m for m in MYTHS if m.key == "lightning-twice")
    module = "examples.news_checker.app"
    async with behind_platform(tmp_path, module, manifest, []) as (admin, world):
        await post_segments(
            admin, world.uid, "s1", "Careful out there.", "Lightning never strikes twice!"
        )
        await post_segments(
            admin, world.uid, "s1", "Lightning never strikes the same place twice.", first=2
        )

        async def inbox() -> list[dict[str, object]]:
            got = await admin.get(f"/v1/users/{world.uid}/notifications")
            return list(got.json()["items"])

        items = await wait_for(inbox, timeout=30)
    assert [(n["app_id"], n["body"]) for n in items] == [(world.app_id, lightning.correction)]
    assert items[0]["title"] == "News checker says"
