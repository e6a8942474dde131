"""Apps written the way Omi's public apps are, unmodified, behind a real ``nudge serve``: a router
app that refuses ``session_id != uid``, a realtime app answering ``{"message"}`` on a trigger
phrase, and a memory-creation app parsing the conversation with Omi's required fields. Three
conversations of one user (the client reuses its session id; the last one ends by silence),
twelve message answers in a minute: every notification reaches the inbox, no app is refused or
marked failing."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN, start_server, wait_for
from tests.proactive.helpers import create_app, create_user, install, manifest, uvicorn_app

SESSION = "phone-1"  # one client session for every conversation, as Omi's clients do
TALK = [
    "Let's plan the party for Saturday.",
    "hey omi, what time does the hall open",
    "hey omi, remind me who brings the music",
    "We need a bigger venue this year.",
    "hey omi, is the cake ordered",
    "hey omi, how many guests said yes",
    "What do you think about the venue?",
]


async def test_omi_apps_run_unmodified(tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        {
            "NUDGE_CONVERSATION_SILENCE_S": "2",
            "NUDGE_PROACTIVE_INTERVAL_S": "1",
            "NUDGE_WEBHOOK_FLUSH_INTERVAL_S": "0.2",
            "NUDGE_DISPATCHER_POLL_INTERVAL_S": "0.1",
        },
    )
    try:
        with (
            uvicorn_app("tests.omi.router_app:app") as mentor_url,
            uvicorn_app("tests.omi.message_app:app") as hey_url,
            uvicorn_app("tests.omi.memory_app:app") as memory_url,
        ):
            async with httpx.AsyncClient(
                base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
            ) as c:
                await _run(c, mentor_url, hey_url, memory_url)
    finally:
        server.stop()


async def _run(c: httpx.AsyncClient, mentor_url: str, hey_url: str, memory_url: str) -> None:
    scopes = ["user_name", "user_context"]
    apps = {
        "mentor": await create_app(c, manifest("Mentor", f"{mentor_url}/mentor", scopes=scopes)),
        "hey": await create_app(c, manifest("Hey Omi", f"{hey_url}/webhook")),
        "memory": await create_app(
            c, manifest("Memories", f"{memory_url}/memory", trigger="memory_creation")
        ),
    }
    await create_user(c, "ana", "Ana")
    for name, app in apps.items():
        await install(c, "ana", app["app_id"], scopes if name == "mentor" else [])

    conversations = []
    started = asyncio.get_running_loop().time()
    for number in range(3):
        for line in TALK:
            r = await c.post(
                f"/v1/users/ana/sessions/{SESSION}/segments",
                json={"segments": [{"text": f"{line} ({number})", "is_user": True}]},
            )
            assert r.status_code == 202, r.text
            conversations.append(r.json()["conversation_id"])
            await asyncio.sleep(0.35)  # each line its own webhook call
        if number < 2:
            assert (await c.post(f"/v1/users/ana/sessions/{SESSION}/finish")).status_code == 200
        # the third conversation ends by itself after 2 s of silence
    talked = asyncio.get_running_loop().time() - started
    assert talked < 60  # twelve message answers in under a minute
    ids = list(dict.fromkeys(conversations))
    assert len(ids) == 3  # one client session, three conversations

    async def inbox() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = (
            await c.get("/v1/users/ana/notifications", params={"limit": 100})
        ).json()["items"]
        return items if len(items) >= 18 else None

    items = await wait_for(inbox, timeout=30)
    by_app = Counter(n["app_id"] for n in items)
    assert by_app == {
        apps["hey"]["app_id"]: 12,  # every "hey omi": not held to the direct API's 10 an hour
        apps["memory"]["app_id"]: 3,  # one "Saved: ..." per conversation, the silent one too
        apps["mentor"]["app_id"]: 3,  # one proactive notification per conversation
    }, items
    saved = sorted(n["body"] for n in items if n["app_id"] == apps["memory"]["app_id"])
    assert all(body.startswith("Saved: ") for body in saved)

    async with httpx.AsyncClient() as plain:
        mentor = (await plain.get(f"{mentor_url}/stats")).json()
        hey = (await plain.get(f"{hey_url}/stats")).json()
        memory = (await plain.get(f"{memory_url}/stats")).json()
    assert mentor["refused"] == 0 and mentor["asked"] == 3 and mentor["calls"] == 21
    assert hey["answered"] == 12 and set(hey["session_ids"]) == {"ana"}
    assert memory["refused"] == 0
    assert sorted(s["id"] for s in memory["saved"]) == sorted(ids)
    assert all(s["segments"] == len(TALK) for s in memory["saved"])
    for app in apps.values():
        listed = (await c.get(f"/v1/apps/{app['app_id']}/traces", params={"limit": 200})).json()
        assert listed["app"]["status"] == "active"
        assert listed["app"]["webhook_failing_since"] is None
        outcomes = Counter(t["outcome"] for t in listed["items"])
        assert not outcomes.keys() & {"webhook_failed", "circuit_open", "invalid_answer"}, outcomes
