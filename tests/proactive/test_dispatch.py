"""The dispatcher: at most one call per one-second window per session, each segment sent once
even with several dispatchers on one database, and apps disabled after failing for too long."""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response

from nudge.platform import Platform
from tests.conftest import ServeASGI, make_settings, wait_for
from tests.proactive.helpers import (
    api_client,
    create_app,
    create_user,
    install,
    manifest,
    post_segments,
    wait_traces,
)


def counting_app(calls: list[dict[str, Any]], status: list[int]) -> FastAPI:
    api = FastAPI()

    @api.post("/hook")
    async def hook(request: Request) -> Response:
        calls.append(await request.json())
        return Response("{}", status_code=status[0], media_type="application/json")

    return api


async def test_at_most_one_call_per_second_per_session(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    calls: list[dict[str, Any]] = []
    async with ServeASGI(counting_app(calls, [200])) as served:
        app = await create_app(client, manifest("Counter", served.url + "/hook"))
        await create_user(client, "ana")
        await install(client, "ana", app["app_id"], [])
        started = time.monotonic()
        texts = [f"segment number {i}" for i in range(12)]
        for text in texts:
            await post_segments(client, "ana", "s1", text)
            await asyncio.sleep(0.05)
        posting = time.monotonic() - started

        async def all_sent() -> bool:
            return sum(len(c["segments"]) for c in calls) >= len(texts)

        await wait_for(all_sent)
        await asyncio.sleep(0.2)
    sent = [s["text"] for c in calls for s in c["segments"]]
    assert sent == texts  # each once, in order
    # One call per one-second window of the session: the windows the posting spanned, plus
    # one for what arrived in the last window after its call.
    interval = platform.settings.webhook_flush_interval_s
    assert len(calls) <= math.floor(posting / interval + 0.5) + 2
    assert len(calls) < len(texts)


async def test_each_segment_once_with_several_dispatchers(
    tmp_path: Path, database_url: str
) -> None:
    """Three platforms (as three processes would) share one database; every segment reaches
    the app exactly once and in order, whichever dispatcher flushed it."""
    received: dict[str, list[str]] = defaultdict(list)
    api = FastAPI()

    @api.post("/hook")
    async def hook(request: Request) -> dict[str, Any]:
        body = await request.json()
        received[body["conversation_id"]].extend(s["text"] for s in body["segments"])
        return {}

    settings = make_settings(tmp_path, database_url=database_url, dispatcher_poll_interval_s=0.05)
    platforms = [await Platform.start(settings) for _ in range(3)]
    clients = [api_client(p) for p in platforms]
    try:
        async with ServeASGI(api) as served:
            c = clients[0]
            app = await create_app(c, manifest("Counter", served.url + "/hook"))
            await create_user(c, "ana")
            await install(c, "ana", app["app_id"], [])
            sessions = [f"s{i}" for i in range(12)]
            expected = {s: [f"{s} part {n}" for n in range(5)] for s in sessions}

            conversations: dict[str, str] = {}  # session -> its conversation

            async def talk(i: int, session: str) -> None:
                for text in expected[session]:
                    stored = await post_segments(clients[i % 3], "ana", session, text)
                    conversations.setdefault(session, stored["conversation_id"])
                    assert stored["conversation_id"] == conversations[session]
                    await asyncio.sleep(0.03)

            await asyncio.gather(*(talk(i, s) for i, s in enumerate(sessions)))

            async def done() -> bool:
                return all(len(received[conversations[s]]) >= 5 for s in sessions)

            await wait_for(done, timeout=30)
            await asyncio.sleep(0.5)
        assert dict(received) == {conversations[s]: texts for s, texts in expected.items()}
    finally:
        for client in clients:
            await client.aclose()
        for p in platforms:
            await p.close()


async def test_failing_app_is_disabled_then_reenabled(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        webhook_disable_after_s=0.5,
        webhook_breaker_failures=1,
        webhook_breaker_cooldown_s=0.05,
    )
    platform = await Platform.start(settings)
    calls: list[dict[str, Any]] = []
    status = [500]
    try:
        async with api_client(platform) as c, ServeASGI(counting_app(calls, status)) as served:
            app = await create_app(c, manifest("Flaky", served.url + "/hook"))
            await create_user(c, "ana")
            await install(c, "ana", app["app_id"], [])

            async def disabled() -> dict[str, Any] | None:
                await post_segments(c, "ana", "s1", "are you there?")
                info: dict[str, Any] = (await c.get(f"/v1/apps/{app['app_id']}")).json()
                return info if info["status"] == "disabled" else None

            info = await wait_for(disabled, timeout=20, interval=0.2)
            reason = info["status_reason"]
            assert "failed since" in reason and "answered HTTP 500" in reason
            assert f"POST /v1/apps/{app['app_id']}/enable" in reason
            traced = await wait_traces(c, app["app_id"], 1)
            assert {t["outcome"] for t in traced} <= {"webhook_failed", "circuit_open"}

            # Disabled: no more calls.
            await asyncio.sleep(0.3)
            before = len(calls)
            await post_segments(c, "ana", "s1", "hello?")
            await asyncio.sleep(1.5)
            assert len(calls) == before

            # Fixed and re-enabled: calls resume and the app stays healthy.
            status[0] = 200
            r = await c.post(f"/v1/apps/{app['app_id']}/enable")
            assert r.status_code == 200 and r.json()["status"] == "active"
            await post_segments(c, "ana", "s1", "back again")

            async def resumed() -> bool:
                return any(s["text"] == "back again" for call in calls for s in call["segments"])

            await wait_for(resumed)
            listed = (await c.get(f"/v1/apps/{app['app_id']}/traces")).json()
            assert listed["app"]["status"] == "active"
            assert listed["app"]["webhook_failing_since"] is None
    finally:
        await platform.close()
