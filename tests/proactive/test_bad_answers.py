"""Bad answers from apps are each recorded in the trace and never affect other apps or sessions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse, RedirectResponse

from nudge.platform import Platform
from tests.conftest import ServeASGI, make_settings, wait_for
from tests.proactive.helpers import (
    api_client,
    create_app,
    create_user,
    inbox,
    install,
    manifest,
    post_segments,
    wait_traces,
)

GOOD_PROMPT = "Give {{user_name}} one short tip about {{user_context}}"

# path -> (answer, expected outcome, words expected in the trace's error)
CASES: dict[str, tuple[Any, str, str]] = {
    "not-json": (Response("hello, platform"), "invalid_answer", "not JSON"),
    "a-list": (JSONResponse([1, 2]), "invalid_answer", "JSON object, not list"),
    "prompt-number": (
        JSONResponse({"notification": {"prompt": 5, "params": []}}),
        "invalid_answer",
        "notification.prompt: must be a string",
    ),
    "params-string": (
        JSONResponse({"notification": {"prompt": GOOD_PROMPT, "params": "user_name"}}),
        "invalid_answer",
        "notification.params",
    ),
    "notification-string": (
        JSONResponse({"notification": "send something"}),
        "invalid_answer",
        "must be an object",
    ),
    "message-number": (JSONResponse({"message": 42}), "invalid_answer", "message: must be"),
    "prompt-4-chars": (
        JSONResponse({"notification": {"prompt": "Hi!!", "params": []}}),
        "invalid_answer",
        "4 characters; it must be 5 to 128,000",
    ),
    "prompt-200k": (
        JSONResponse({"notification": {"prompt": "a" * 200_000, "params": []}}),
        "invalid_answer",
        "200000 characters",
    ),
    "hang": (None, "webhook_failed", "no complete answer within 1 s"),
    "redirect": (
        RedirectResponse("https://example.com/elsewhere", 302),
        "webhook_failed",
        "redirect",
    ),
    "error-500": (Response("oops", status_code=500), "webhook_failed", "answered HTTP 500"),
}


def scripted_app(release: asyncio.Event) -> FastAPI:
    api = FastAPI()

    @api.post("/{case}")
    async def answer(case: str) -> Any:
        if case == "hang":
            await asyncio.wait_for(release.wait(), 30)
            return {}
        if case == "good":
            return {
                "notification": {"prompt": GOOD_PROMPT, "params": ["user_name", "user_context"]}
            }
        if case == "unknown-params":
            return {
                "notification": {
                    "prompt": "Tip for {{user_name}} {{favorite_color}} {{user_facts}}",
                    "params": ["user_name", "favorite_color", "user_facts"],
                }
            }
        return CASES[case][0]

    return api


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Platform]]:
    settings = make_settings(tmp_path, webhook_timeout_s=1.0)
    platform = await Platform.start(settings)
    async with api_client(platform) as c:
        yield c, platform
    await platform.close()


async def test_bad_answers_are_traced_and_isolated(
    setup: tuple[httpx.AsyncClient, Platform],
) -> None:
    client, platform = setup
    release = asyncio.Event()
    async with ServeASGI(scripted_app(release)) as served:
        await create_user(client, "ana", "Ana", ["Likes tea"])
        await create_user(client, "bo", "Bo")
        # Past conversations, before any app is installed: {{user_context}} brings them back.
        await post_segments(client, "ana", "ana-0", "The garden needs new soil.")
        await post_segments(client, "bo", "bo-0", "Bo booked a hotel in Lisbon.")
        for uid, session in (("ana", "ana-0"), ("bo", "bo-0")):
            r = await client.post(f"/v1/users/{uid}/sessions/{session}/finish")
            assert r.status_code == 200, r.text
        apps: dict[str, str] = {}
        for case in [*CASES, "good", "unknown-params"]:
            body = manifest(case, f"{served.url}/{case}", scopes=["user_name", "user_context"])
            apps[case] = (await create_app(client, body))["app_id"]
            await install(client, "ana", apps[case], ["user_name", "user_context"])
        await install(client, "bo", apps["good"], ["user_name"])
        await post_segments(client, "ana", "ana-1", "We talked about the garden today.")
        await post_segments(client, "bo", "bo-1", "Bo is planning a trip to Lisbon again.")

        for case, (_, outcome, words) in CASES.items():
            (trace,) = await wait_traces(client, apps[case], 1)
            assert trace["outcome"] == outcome, (case, trace)
            assert words in (trace["error"] or ""), (case, trace["error"])
            assert trace["notification_id"] is None
            assert trace["request"]["segments"] == 1
        release.set()

        # The good app notified both users, each from their own session and scopes.
        good = await wait_traces(client, apps["good"], 2)
        assert {t["session_id"]: t["outcome"] for t in good} == {
            "ana-1": "notified",
            "bo-1": "notified",
        }
        by_session = {t["session_id"]: t for t in good}
        assert "garden" in by_session["ana-1"]["prompt"]["filled"]
        assert "Lisbon" not in by_session["ana-1"]["prompt"]["filled"]
        assert by_session["bo-1"]["scopes"]["effective"] == ["user_name"]

        # Unknown params are ignored and said so; the notification still goes out.
        (unknown,) = await wait_traces(client, apps["unknown-params"], 1)
        assert unknown["outcome"] == "notified"
        decisions = unknown["scopes"]["decisions"]
        assert decisions["favorite_color"].startswith("unknown scope")
        assert decisions["user_facts"] == "not in the manifest's proactive_notification.scopes"
        assert unknown["prompt"]["left_as_written"] == ["favorite_color"]
        assert "Likes tea" not in unknown["prompt"]["filled"]

        async def ana_notes() -> list[dict[str, Any]] | None:
            found = await inbox(client, "ana")
            return found if len(found) >= 2 else None

        notes = await wait_for(ana_notes)
        assert sorted(n["app_id"] for n in notes) == sorted([apps["good"], apps["unknown-params"]])
        assert len(await inbox(client, "bo")) == 1
        # Answers that failed count toward the app's health; good answers do not.
        listed = (await client.get(f"/v1/apps/{apps['error-500']}/traces")).json()
        assert listed["app"]["webhook_failing_since"] is not None
        listed = (await client.get(f"/v1/apps/{apps['good']}/traces")).json()
        assert listed["app"]["webhook_failing_since"] is None
