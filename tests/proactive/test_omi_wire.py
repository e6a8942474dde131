"""The realtime and memory wire as Omi's backend speaks it: conversations that end by themselves
after a silence (in any process), the memory-creation payload field by field, the LLM's summary,
and ``{"message"}`` answers as Omi treats them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import insert

from nudge.config import Settings
from nudge.platform import Platform
from nudge.proactive.conversation import new_conversation_id
from nudge.proactive.ingest import queue_memory_webhooks
from nudge.proactive.summary import parse_summary
from nudge.sdk.webhook import Conversation as SdkConversation
from nudge.store.models import Conversation, Segment
from tests.conftest import ServeASGI, make_settings, wait_for
from tests.llm.test_openai import protocol_fake
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
from tests.proactive.omi_model import conversation_problems

Answer = Callable[[dict[str, Any]], Any]


def scripted_app(calls: list[dict[str, Any]], answers: dict[str, Answer]) -> FastAPI:
    """``POST /{name}``: recorded (query and body), answered by ``answers[name](body)``."""
    api = FastAPI()

    @api.post("/{name}")
    async def hook(name: str, request: Request) -> Any:
        body = await request.json()
        calls.append({"name": name, "query": dict(request.query_params), "body": body})
        return answers[name](body) if name in answers else {}

    return api


def memory_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in calls if c["name"] == "memory"]


async def _memory_world(c: httpx.AsyncClient, url: str) -> str:
    app = await create_app(c, manifest("Memories", f"{url}/memory", trigger="memory_creation"))
    await create_user(c, "ana", "Ana")
    await install(c, "ana", app["app_id"], [])
    return str(app["app_id"])


# --- silence ----------------------------------------------------------------------------------


async def test_silent_conversations_end_by_themselves_in_any_process(
    tmp_path: Path, database_url: str
) -> None:
    """A conversation stored by one process, which then stops, is ended by another process's
    dispatcher once no segment came for NUDGE_CONVERSATION_SILENCE_S; each segment pushed that
    deadline. Explicit finish still works and is not ended a second time."""
    silence = 1.5
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        conversation_silence_s=silence,
        dispatcher_poll_interval_s=0.05,
    )
    calls: list[dict[str, Any]] = []
    async with ServeASGI(scripted_app(calls, {})) as served:
        first = await Platform.start(settings)
        async with api_client(first) as c:
            await _memory_world(c, served.url)
            talk_started = time.time()
            cid = (await post_segments(c, "ana", "ana", "Book the venue."))["conversation_id"]
            for i in range(4):  # 1.8 s of talk: longer than the silence, never silent that long
                await asyncio.sleep(0.45)
                more = await post_segments(c, "ana", "ana", f"And the cake, part {i}.")
                assert more["conversation_id"] == cid
            last_segment_at = time.time()
            session = (await c.get("/v1/users/ana/sessions/ana")).json()
            assert session["status"] == "in_progress" and last_segment_at - talk_started > silence
        await first.close()  # this process stops before the deadline

        second = await Platform.start(settings)
        try:
            async with api_client(second) as c:
                await wait_for(lambda: asyncio.sleep(0, result=memory_calls(calls)), timeout=10)
                (mem,) = memory_calls(calls)
                assert mem["body"]["id"] == cid and mem["body"]["status"] == "completed"
                assert len(mem["body"]["transcript_segments"]) == 5
                # It finished when its last segment came, not when the silence was noticed.
                finished = datetime.fromisoformat(mem["body"]["finished_at"]).timestamp()
                assert last_segment_at - 0.5 <= finished <= last_segment_at + 0.1
                session = (await c.get("/v1/users/ana/sessions/ana")).json()
                assert session["id"] == cid and session["status"] == "completed"

                # The client reuses its session id: a new conversation, ended by finish.
                again = await post_segments(c, "ana", "ana", "Next day, new plans.")
                assert again["conversation_id"] != cid
                r = await c.post("/v1/users/ana/sessions/ana/finish")
                assert r.status_code == 200 and r.json()["id"] == again["conversation_id"]
                await wait_for(lambda: asyncio.sleep(0, result=len(memory_calls(calls)) == 2))
                await asyncio.sleep(silence + 0.5)
                assert len(memory_calls(calls)) == 2  # not ended again by the silence
        finally:
            await second.close()


# --- the memory-creation payload ------------------------------------------------------------


async def test_memory_payload_is_omis_conversation(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    platform = await Platform.start(settings)
    calls: list[dict[str, Any]] = []
    try:
        async with api_client(platform) as c, ServeASGI(scripted_app(calls, {})) as served:
            await _memory_world(c, served.url)
            stored = await post_segments(
                c, "ana", "phone", "We should book the venue.", "And order the cake."
            )
            r = await c.post(
                "/v1/users/ana/sessions/phone/finish",
                json={"language": "en", "geolocation": {"latitude": 38.7, "longitude": -9.1}},
            )
            assert r.status_code == 200, r.text
            await wait_for(lambda: asyncio.sleep(0, result=memory_calls(calls)))
            payload = memory_calls(calls)[0]["body"]
            bad = await c.post(
                "/v1/users/ana/sessions/other/finish", json={"geolocation": {"latitude": 123}}
            )
    finally:
        await platform.close()
    assert conversation_problems(payload) == []
    assert payload["id"] == stored["conversation_id"] and payload["source"] == "omi"
    assert payload["language"] == "en" and payload["geolocation"]["latitude"] == 38.7
    assert payload["discarded"] is False and payload["status"] == "completed"
    # The fake LLM writes no summary: the plain one stays.
    assert payload["structured"]["title"] == "We should book the venue."
    assert payload["structured"]["category"] == "other" and payload["structured"]["emoji"]
    segments = payload["transcript_segments"]
    assert [s["text"] for s in segments] == ["We should book the venue.", "And order the cake."]
    assert len({s["id"] for s in segments}) == 2
    parsed = SdkConversation.model_validate(payload)  # the SDK reads every field
    assert parsed.finished_at is not None and parsed.geolocation is not None
    assert bad.status_code == 422 and "geolocation.latitude" in bad.json()["detail"]


async def test_the_llm_writes_the_summary_before_the_memory_calls(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    script: list[Any] = [
        "Title: Venue and cake\nOverview: Ana booked the venue and ordered the cake.\n"
        "Category: Family",
        503,
        503,
        503,  # the second conversation: the LLM keeps failing, the plain summary stays
    ]
    calls: list[dict[str, Any]] = []
    async with ServeASGI(protocol_fake(script, seen, asyncio.Event())) as llm:
        settings = make_settings(
            tmp_path,
            llm_provider="openai",
            llm_base_url=llm.url + "/v1",
            llm_api_key="sk-test",
            llm_max_retries=2,
        )
        platform = await Platform.start(settings)
        try:
            async with api_client(platform) as c, ServeASGI(scripted_app(calls, {})) as served:
                await _memory_world(c, served.url)
                await post_segments(c, "ana", "phone", "I booked the venue.", "Cake is ordered.")
                await c.post("/v1/users/ana/sessions/phone/finish")
                await wait_for(lambda: asyncio.sleep(0, result=memory_calls(calls)))
                await post_segments(c, "ana", "phone", "Second talk about the band.")
                await c.post("/v1/users/ana/sessions/phone/finish")
                await wait_for(lambda: asyncio.sleep(0, result=len(memory_calls(calls)) == 2))
                first = memory_calls(calls)[0]["body"]
                stored = (await c.get("/v1/users/ana/sessions/phone")).json()
        finally:
            await platform.close()
    assert first["structured"]["title"] == "Venue and cake"
    assert first["structured"]["overview"] == "Ana booked the venue and ordered the cake."
    assert first["structured"]["category"] == "family"
    assert "I booked the venue." in seen[0]["body"]["messages"][-1]["content"]
    second = memory_calls(calls)[1]["body"]
    assert second["structured"]["title"] == "Second talk about the band."  # the plain fallback
    assert stored["structured"]["title"] == "Second talk about the band."


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            "Title: Launch date\nOverview: The launch moves to March.\nCategory: business",
            ("Launch date", "The launch moves to March.", "business"),
        ),
        (
            '**Title:** "Launch date"\n**Overview:** The launch moves to March.\nCategory: rockets',
            ("Launch date", "The launch moves to March.", "other"),
        ),
        ("The launch moves to March.", None),
        ("Title: Launch\nOverview: ok", None),
    ],
)
def test_parse_summary(output: str, expected: tuple[str, str, str] | None) -> None:
    summary = parse_summary(output)
    found = None if summary is None else (summary.title, summary.overview, summary.category)
    assert found == expected


# --- {"message"} answers --------------------------------------------------------------------


def _remind(body: dict[str, Any]) -> dict[str, Any]:
    return {"message": f"Noted: {body['segments'][-1]['text']}"}


Reminders = tuple[httpx.AsyncClient, dict[str, Any], list[dict[str, Any]]]


@asynccontextmanager
async def _reminders(settings: Settings, name: str) -> AsyncIterator[Reminders]:
    """A platform where Ana installed ``name``, a realtime app answering each segment with a
    ``{"message"}`` (``_remind``); the API client, the app and the app's calls."""
    platform = await Platform.start(settings)
    calls: list[dict[str, Any]] = []
    try:
        async with (
            api_client(platform) as c,
            ServeASGI(scripted_app(calls, {"live": _remind})) as served,
        ):
            app = await create_app(c, manifest(name, f"{served.url}/live"))
            await create_user(c, "ana", "Ana")
            await install(c, "ana", app["app_id"], [])
            yield c, app, calls
    finally:
        await platform.close()


async def _say_each(c: httpx.AsyncClient, calls: list[dict[str, Any]], texts: list[str]) -> None:
    """Each text as Ana's next segment, once the app has been called for the one before."""
    for i, text in enumerate(texts):
        await post_segments(c, "ana", "ana", text)
        await wait_for(lambda n=i: asyncio.sleep(0, result=len(calls) > n))


async def test_message_answers_do_not_count_against_the_direct_cap(
    tmp_path: Path, database_url: str
) -> None:
    """Twelve ``{"message"}`` answers in a minute all reach the inbox (the direct API's cap is
    10 an hour) and leave that cap untouched; the duplicate window still holds."""
    settings = make_settings(tmp_path, database_url=database_url, webhook_flush_interval_s=0.05)
    async with _reminders(settings, "Reminders") as (c, app, calls):
        await _say_each(c, calls, [f"remember item number {i}" for i in range(12)])
        await post_segments(c, "ana", "ana", "remember item number 11")  # a repeat
        traced = await wait_traces(c, app["app_id"], 13)
        notes = [n for n in await inbox(c, "ana") if n["app_id"] == app["app_id"]]
        direct = await c.post(
            f"/v2/integrations/{app['app_id']}/notification",
            params={"uid": "ana", "message": "A direct one"},
            headers={"Authorization": f"Bearer {app['app_secret']}"},
        )
    assert [t["outcome"] for t in traced] == ["message_sent"] * 13
    assert traced[-1]["notification"]["duplicate"] is True  # within 60 s: sent once
    assert len(notes) == 12 and {n["kind"] for n in notes} == {"message"}
    assert notes[0]["title"] == "Reminders says"
    assert direct.status_code == 200, direct.text
    assert direct.headers["X-RateLimit-Remaining"] == "9"


async def test_message_answers_have_their_own_guard(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        webhook_flush_interval_s=0.05,
        webhook_message_limit_per_hour=3,
    )
    async with _reminders(settings, "Runaway") as (c, app, calls):
        await _say_each(c, calls, [f"item {i}" for i in range(4)])
        traced = await wait_traces(c, app["app_id"], 4)
    assert [t["outcome"] for t in traced] == ["message_sent"] * 3 + ["message_refused"]
    assert "at most 3 webhook message answers per user per hour" in traced[-1]["error"]


async def test_answers_as_omi_treats_them(tmp_path: Path) -> None:
    """Empty messages and bodies are no action; any 2xx counts; a short message is sent from a
    memory-creation webhook but not from a realtime one; an answer with a notification and a
    message sends both and the trace keeps both outcomes."""
    settings = make_settings(tmp_path, webhook_flush_interval_s=0.05)
    platform = await Platform.start(settings)
    calls: list[dict[str, Any]] = []
    prompt = "Say hello to {{user_name}} in five words."
    answers: dict[str, Answer] = {
        "empty-message": lambda _: {"message": "", "session_id": "x"},
        "status-only": lambda _: {"status": "success"},
        "no-body": lambda _: Response(status_code=204),
        "created": lambda _: JSONResponse({"message": "Created and sent."}, status_code=201),
        "too-short": lambda _: {"message": "Hi"},
        "both": lambda _: {
            "message": "A message as well.",
            "notification": {"prompt": prompt, "params": ["user_name"]},
        },
        "memory": lambda _: {"message": "Saved"},
    }
    try:
        async with api_client(platform) as c, ServeASGI(scripted_app(calls, answers)) as served:
            await create_user(c, "ana", "Ana")
            apps = {}
            for name in answers:
                trigger = "memory_creation" if name == "memory" else "transcript_processed"
                scopes = ["user_name"] if name == "both" else None
                body = manifest(name, f"{served.url}/{name}", trigger=trigger, scopes=scopes)
                apps[name] = (await create_app(c, body))["app_id"]
                await install(c, "ana", apps[name], scopes or [])
            await post_segments(c, "ana", "ana", "Hello there, everyone.")
            await c.post("/v1/users/ana/sessions/ana/finish")
            traces = {name: (await wait_traces(c, app_id, 1))[0] for name, app_id in apps.items()}
            notes = await wait_for(
                lambda: _inbox_of(c, "ana", 4), timeout=10
            )  # created, both (two), memory
    finally:
        await platform.close()
    outcome = {name: t["outcome"] for name, t in traces.items()}
    assert outcome == {
        "empty-message": "no_action",
        "status-only": "no_action",
        "no-body": "no_action",
        "created": "message_sent",
        "too-short": "message_refused",
        "both": "notified",
        "memory": "message_sent",
    }
    both = traces["both"]
    assert [(o["step"], o["outcome"]) for o in both["outcomes"]] == [
        ("proactive", "notified"),
        ("message", "message_sent"),
    ]
    assert both["notification"]["kind"] == "proactive"
    assert both["also_notification"]["kind"] == "message"
    assert sorted(n["kind"] for n in notes) == ["message", "message", "message", "proactive"]


async def _inbox_of(c: httpx.AsyncClient, uid: str, count: int) -> list[dict[str, Any]] | None:
    found = await inbox(c, uid)
    return found if len(found) >= count else None


async def test_a_conversation_stored_whole_fires_the_memory_webhooks(
    tmp_path: Path, database_url: str
) -> None:
    """``queue_memory_webhooks`` (Omi's integration API imports call it): the memory apps get the
    stored conversation once, realtime apps are not called for its segments, and a discarded
    one calls nobody."""
    settings = make_settings(tmp_path, database_url=database_url, dispatcher_poll_interval_s=0.05)
    platform = await Platform.start(settings)
    calls: list[dict[str, Any]] = []
    ids = [new_conversation_id(), new_conversation_id()]
    try:
        async with api_client(platform) as c, ServeASGI(scripted_app(calls, {})) as served:
            await _memory_world(c, served.url)
            live = await create_app(c, manifest("Live", f"{served.url}/live"))
            await install(c, "ana", live["app_id"], [])
            now = time.time()

            def store(conn: Any) -> None:
                for cid, discarded in zip(ids, (False, True)):
                    conn.execute(
                        insert(Conversation).values(
                            id=cid,
                            uid="ana",
                            status="finished",
                            source="external_integration",
                            discarded=discarded,
                            title="Imported",
                            overview="Notes another app sent.",
                            transcript="User: Imported words.\n",
                            created_at=now,
                            started_at=now - 60,
                            finished_at=now,
                        )
                    )
                    conn.execute(
                        insert(Segment).values(
                            conversation_id=cid, uid="ana", text="Imported words.", created_at=now
                        )
                    )
                    queue_memory_webhooks(conn, cid)

            await platform.db.write(store)
            await wait_for(lambda: asyncio.sleep(0, result=memory_calls(calls)))
            await asyncio.sleep(0.5)
    finally:
        await platform.close()
    assert [call["name"] for call in calls] == ["memory"]  # once; no realtime call; not discarded
    body = calls[0]["body"]
    assert body["id"] == ids[0] and body["source"] == "external_integration"
    assert [s["text"] for s in body["transcript_segments"]] == ["Imported words."]
    assert conversation_problems(body) == []
