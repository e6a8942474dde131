"""Transcript ingestion (POST and WebSocket), finishing sessions, memory_creation webhooks, and
the traces API's access rules."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from fastapi import FastAPI, Request
from sqlalchemy import func, select

from nudge.platform import Platform
from nudge.store.models import Conversation, Segment
from tests.conftest import ServeASGI, World, make_settings, wait_for
from tests.proactive.helpers import (
    api_client,
    create_app,
    create_user,
    install,
    manifest,
    post_segments,
    seg,
    wait_traces,
)


def recording_app(calls: list[dict[str, Any]]) -> FastAPI:
    api = FastAPI()

    @api.post("/{kind}")
    async def hook(kind: str, request: Request) -> dict[str, Any]:
        calls.append({"kind": kind, "query": dict(request.query_params), **await request.json()})
        return {}

    return api


async def counts(platform: Platform) -> tuple[int, int]:
    def count(conn: Any) -> tuple[int, int]:
        convs = conn.scalar(select(func.count()).select_from(Conversation))
        return int(convs or 0), int(conn.scalar(select(func.count()).select_from(Segment)) or 0)

    return await platform.db.query(count)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"segments": []}, "segments: List should have at least 1 item"),
        ({"segments": [{"speaker": "SPEAKER_00"}]}, "segments.0.text: Field required"),
        ({"segments": [{"text": ""}]}, "segments.0.text"),
        ({"segments": [{"text": "a\x00b"}]}, "NUL"),
        ({"segments": [{"text": "x", "start": -1}]}, "segments.0.start"),
        ({"segments": [{"text": "x"}] * 501}, "at most 500"),
        ({"segment": [{"text": "x"}]}, "segments: Field required"),
        ({"segments": [{"text": "x", "is_user": "maybe"}]}, "segments.0.is_user"),
    ],
)
async def test_bad_segments_are_refused_whole(
    client: httpx.AsyncClient, platform: Platform, world: World, body: Any, words: str
) -> None:
    r = await client.post(f"/v1/users/{world.uid}/sessions/s1/segments", json=body)
    assert r.status_code == 422 and words in r.json()["detail"], r.text
    assert await counts(platform) == (0, 0)


async def test_ingest_refusals(client: httpx.AsyncClient, world: World, platform: Platform) -> None:
    base = f"/v1/users/{world.uid}/sessions"
    body = {"segments": [seg("hello there")]}
    assert (await client.post(f"{base}/bad id!/segments", json=body)).status_code == 422
    r = await client.post("/v1/users/nobody/sessions/s1/segments", json=body)
    assert r.status_code == 404 and "nobody" in r.json()["detail"]
    r = await client.post(
        f"{base}/s1/segments", json=body, headers={"Authorization": "Bearer ut_wrong"}
    )
    assert r.status_code == 401
    # Session ids belong to their user: two users may stream under the same one.
    await create_user(client, "other", "Other")
    theirs = await client.post("/v1/users/other/sessions/s1/segments", json=body)
    mine = await client.post(f"{base}/s1/segments", json=body)
    assert theirs.status_code == mine.status_code == 202
    assert theirs.json()["conversation_id"] != mine.json()["conversation_id"]
    # The user's own token works; another user's token does not.
    own = {"Authorization": f"Bearer {world.user_token}"}
    assert (await client.post(f"{base}/s2/segments", json=body, headers=own)).status_code == 202
    r = await client.post("/v1/users/other/sessions/s3/segments", json=body, headers=own)
    assert r.status_code == 403
    assert await counts(platform) == (3, 3)


@pytest.mark.parametrize(
    ("content", "headers", "status", "words"),
    [
        # Each is handed from the plain ASGI endpoint to the typed route, which answers as always.
        (b'{"segments": [{"text": "hi"}]}', {}, 422, "valid dictionary"),  # no content-type
        (b'{"segments": [{"text": "hi"}]}', {"content-type": "text/plain"}, 422, "dictionary"),
        (b"{nope", {"content-type": "application/json"}, 422, "JSON decode error"),
        (b"", {"content-type": "application/json"}, 422, "request: Field required"),
        (
            b'{"segments": [{"text": "hi"}]}',
            {"content-type": "application/json", "Authorization": ""},
            401,
            "missing Authorization header",
        ),
    ],
)
async def test_segments_outside_the_plain_case_get_the_typed_answers(
    client: httpx.AsyncClient,
    platform: Platform,
    world: World,
    content: bytes,
    headers: dict[str, str],
    status: int,
    words: str,
) -> None:
    path = f"/v1/users/{world.uid}/sessions/s1/segments"
    r = await client.post(path, content=content, headers=headers)
    assert r.status_code == status and words in r.json()["detail"], r.text
    assert await counts(platform) == (0, 0)


async def test_user_tokens_are_checked_per_request_in_one_batch(
    client: httpx.AsyncClient, world: World, platform: Platform
) -> None:
    created = await client.post("/v1/users", json={"uid": "other", "name": "Other"})
    other_token = created.json()["user_token"]

    def post(uid: str, sid: str, token: str) -> Any:
        return client.post(
            f"/v1/users/{uid}/sessions/{sid}/segments",
            json={"segments": [seg("hi")]},
            headers={"Authorization": f"Bearer {token}"},
        )

    answers = await asyncio.gather(
        post(world.uid, "t1", world.user_token),  # own token
        post("other", "t2", world.user_token),  # another user's token: 403
        post(world.uid, "t3", "ut_unknown"),  # unknown token: 401
        post("other", "t4", other_token),  # the other user's own token
    )
    assert [r.status_code for r in answers] == [202, 403, 401, 202], [r.text for r in answers]
    assert await counts(platform) == (2, 2)


async def test_finish_sends_memory_and_the_last_segments(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    calls: list[dict[str, Any]] = []
    async with ServeASGI(recording_app(calls)) as served:
        realtime = await create_app(client, manifest("Live", f"{served.url}/live"))
        memory = await create_app(
            client, manifest("Memory", f"{served.url}/memory", trigger="memory_creation")
        )
        await create_user(client, "ana")
        for app in (realtime, memory):
            await install(client, "ana", app["app_id"], [])
        first = await post_segments(client, "ana", "conv-1", "We should book the venue.")
        cid = first["conversation_id"]
        await wait_for(lambda: asyncio.sleep(0, result=len(calls) >= 1))
        again = await post_segments(client, "ana", "conv-1", "And send invitations by Friday.")
        assert again["conversation_id"] == cid
        r = await client.post("/v1/users/ana/sessions/conv-1/finish", json={"title": "Party plan"})
        assert r.status_code == 200, r.text
        finished = r.json()
        assert finished["id"] == cid and finished["session_id"] == "conv-1"
        assert finished["structured"]["title"] == "Party plan"
        assert finished["structured"]["overview"].startswith("We should book the venue.")
        assert [s["text"] for s in finished["transcript_segments"]] == [
            "We should book the venue.",
            "And send invitations by Friday.",
        ]
        await wait_for(lambda: asyncio.sleep(0, result=len(calls) >= 3))
        live = [c for c in calls if c["kind"] == "live"]
        (mem,) = [c for c in calls if c["kind"] == "memory"]
        assert [s["text"] for c in live for s in c["segments"]] == [
            "We should book the venue.",
            "And send invitations by Friday.",
        ]
        # As Omi's backend: the session id is the uid, in the query and the body.
        assert live[0]["query"] == {"session_id": "ana", "uid": "ana"}
        assert live[0]["session_id"] == "ana" and live[0]["conversation_id"] == cid
        assert set(live[0]["segments"][0]) == {
            "text",
            "speaker",
            "speaker_id",
            "is_user",
            "start",
            "end",
        }
        assert mem["query"] == {"uid": "ana"}
        assert mem["id"] == cid and mem["structured"]["title"] == "Party plan"
        assert mem["status"] == "completed" and mem["discarded"] is False
        assert mem["finished_at"] and mem["started_at"] and mem["created_at"]
        assert len(mem["transcript_segments"]) == 2
        (trace,) = await wait_traces(client, memory["app_id"], 1)
        assert trace["kind"] == "memory_creation" and trace["outcome"] == "no_action"
        assert trace["conversation_id"] == cid and trace["session_id"] == "conv-1"

        session = (await client.get("/v1/users/ana/sessions/conv-1")).json()
        assert session["id"] == cid and session["status"] == "completed"
        r = await client.post("/v1/users/ana/sessions/conv-1/finish")
        assert r.status_code == 409 and "no live conversation" in r.json()["detail"]
        assert (await client.post("/v1/users/ana/sessions/nope/finish")).status_code == 404
        await asyncio.sleep(0.3)
        assert len(calls) == 3  # memory_creation went out once

        # The session id is reused, as Omi's clients do: a new conversation opens.
        later = await post_segments(client, "ana", "conv-1", "Next day: the venue confirmed.")
        assert later["conversation_id"] != cid
        await wait_for(lambda: asyncio.sleep(0, result=len(calls) >= 4))
        assert calls[3]["conversation_id"] == later["conversation_id"]
        assert calls[3]["session_id"] == "ana"
        session = (await client.get("/v1/users/ana/sessions/conv-1")).json()
        assert session["id"] == later["conversation_id"] and session["status"] == "in_progress"


async def test_websocket_listen(live_url: str, client: httpx.AsyncClient, world: World) -> None:
    ws_url = live_url.replace("http://", "ws://") + f"/v1/users/{world.uid}/listen"
    async with websockets.connect(f"{ws_url}?session_id=ws-1&token={world.user_token}") as ws:
        await ws.send(json.dumps([seg("first words"), seg("second words")]))
        stored = json.loads(await ws.recv())
        assert stored["session_id"] == "ws-1" and stored["accepted"] == 2
        assert stored["conversation_id"]
        await ws.send(json.dumps({"segments": [seg("third")]}))
        assert json.loads(await ws.recv())["accepted"] == 1
        await ws.send(json.dumps(seg("fourth")))
        assert json.loads(await ws.recv())["accepted"] == 1
        await ws.send("not json")
        bad = json.loads(await ws.recv())
        assert bad["status"] == 422 and "bad message" in bad["error"]
        await ws.send(json.dumps([{"speaker": "x"}]))
        assert "text: Field required" in json.loads(await ws.recv())["error"]
        await ws.send(b"\x00\x01audio")
        assert "binary" in json.loads(await ws.recv())["error"]
        await ws.send(json.dumps([seg("still open")]))
        assert json.loads(await ws.recv())["accepted"] == 1
    session = (await client.get(f"/v1/users/{world.uid}/sessions/ws-1")).json()
    assert [s["text"] for s in session["transcript_segments"]] == [
        "first words",
        "second words",
        "third",
        "fourth",
        "still open",
    ]
    # Bad credentials: told why, then closed with 1008 (policy violation).
    async with websockets.connect(f"{ws_url}?session_id=ws-2&token=ut_nope") as ws:
        refused = json.loads(await ws.recv())
        assert refused["status"] == 401
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_traces_api_access(client: httpx.AsyncClient, world: World) -> None:
    other = await create_app(client, manifest("Other", "http://127.0.0.1:9/x"))
    path = f"/v1/apps/{world.app_id}/traces"
    mine = {"Authorization": f"Bearer {world.app_secret}"}
    r = await client.get(path, headers=mine)
    assert r.status_code == 200 and r.json()["items"] == []
    assert r.json()["app"]["status"] == "active"
    r = await client.get(path, headers={"Authorization": f"Bearer {other['app_secret']}"})
    assert r.status_code == 401 and "another app" in r.json()["detail"]
    r = await client.get(path, headers={"Authorization": f"Bearer {world.user_token}"})
    assert r.status_code == 401
    assert (await client.get(path, headers={"Authorization": ""})).status_code == 401
    assert (await client.get(path, params={"limit": 0})).status_code == 422
    assert (await client.get("/v1/apps/app_missing/traces")).status_code == 404
    r = await client.get(f"{path}/tr_missing", headers=mine)
    assert r.status_code == 404


async def test_concurrent_requests_in_one_batch_get_their_own_answers(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    await create_user(client, "a")
    await create_user(client, "b")
    done = await post_segments(client, "a", "done", "old talk")
    assert (await client.post("/v1/users/a/sessions/done/finish")).status_code == 200
    mine = await post_segments(client, "a", "mine", "first")

    def post(uid: str, sid: str, text: str) -> Any:
        return client.post(
            f"/v1/users/{uid}/sessions/{sid}/segments", json={"segments": [seg(text)]}
        )

    answers = await asyncio.gather(
        post("a", "mine", "second"),  # live conversation: stored in it
        post("nobody", "x1", "hi"),  # unknown user: 404
        post("b", "mine", "b's own"),  # b's own session of the same name
        post("a", "done", "late"),  # its conversation finished: a new one opens
        post("a", "new-1", "hello"),  # new session
        post("b", "new-2", "hey"),  # new session for b
        post("a", "new-2", "race"),  # the same new id for another user, same batch
        post("a", "new-1", "again"),  # the same new session twice in one batch
    )
    codes = [r.status_code for r in answers]
    assert codes == [202, 404, 202, 202, 202, 202, 202, 202], [r.text for r in answers]
    ids = [r.json().get("conversation_id") for r in answers]
    assert ids[0] == mine["conversation_id"]
    assert ids[3] != done["conversation_id"]
    assert ids[4] == ids[7] and ids[5] != ids[6]
    assert len({ids[0], ids[2], ids[3], ids[4], ids[5], ids[6]}) == 6
    session = (await client.get("/v1/users/a/sessions/mine")).json()
    assert [s["text"] for s in session["transcript_segments"]] == ["first", "second"]
    assert (await client.get("/v1/users/a/sessions/new-1")).json()["status"] == "in_progress"
    # done (finished and new), mine (a and b), new-1, new-2 (a and b)
    assert await counts(platform) == (7, 9)


def _add_users(conn: Any, *uids: str) -> None:
    from nudge.store.models import User

    for uid in uids:
        conn.execute(
            User.__table__.insert().values(uid=uid, name=uid, token_hash=uid, created_at=0)
        )


async def test_ingest_batch_answers_each_request(tmp_path: Any, database_url: str) -> None:
    """One batch holding every case, on SQLite and PostgreSQL."""
    from nudge.errors import Forbidden, NotFound, Unauthorized
    from nudge.proactive.ingest import IngestRequest, SegmentIn, ingest_batch
    from nudge.store.db import Database
    from nudge.store.migrate import upgrade

    await upgrade(database_url)
    db = Database(database_url)
    try:

        def seed(conn: Any) -> Any:
            _add_users(conn, "a", "b")
            (old,) = ingest_batch(conn, [IngestRequest("a", "done", [SegmentIn(text="old")])])
            assert isinstance(old, dict)
            conn.execute(
                Conversation.__table__.update()
                .where(Conversation.id == old["conversation_id"])
                .values(status="finished")
            )
            return old

        old = await db.write(seed)

        async def batch(*requests: IngestRequest) -> list[Any]:
            return await db.write(lambda conn: ingest_batch(conn, list(requests)))

        def req(uid: str, sid: str, *texts: str) -> IngestRequest:
            return IngestRequest(uid, sid, [SegmentIn(text=t) for t in texts])

        results = await batch(
            req("a", "s1", "one", "two"),
            req("ghost", "s2", "boo"),
            req("a", "done", "late"),
            req("b", "s1", "bee one"),
            req("a", "s1", "three"),
            req("b", "s3", "bee"),
        )
        assert isinstance(results[1], NotFound)
        ok = [r for r in results if isinstance(r, dict)]
        assert [(r["session_id"], r["accepted"]) for r in ok] == [
            ("s1", 2),
            ("done", 1),
            ("s1", 1),
            ("s1", 1),
            ("s3", 1),
        ]
        a_s1, late, b_s1, a_s1_again, b_s3 = (r["conversation_id"] for r in ok)
        assert a_s1 == a_s1_again and len({a_s1, late, b_s1, b_s3, old["conversation_id"]}) == 5
        again = await batch(req("a", "s1", "four"), req("b", "s1", "bee two"))
        assert [r["conversation_id"] for r in again if isinstance(r, dict)] == [a_s1, b_s1]
        # User tokens checked in the batch (the test users' token hashes are their uids).
        checked = await batch(
            IngestRequest("a", "s1", [SegmentIn(text="five")], token_hash="b"),
            IngestRequest("a", "s1", [SegmentIn(text="six")], token_hash="nobody"),
            IngestRequest("a", "s1", [SegmentIn(text="seven")], token_hash="a"),
        )
        assert isinstance(checked[0], Forbidden) and isinstance(checked[1], Unauthorized)
        assert isinstance(checked[2], dict) and checked[2]["conversation_id"] == a_s1
        query = select(Segment.text).where(Segment.conversation_id == a_s1).order_by(Segment.id)
        texts = await db.query(lambda conn: list(conn.execute(query).scalars()))
        assert texts == ["one", "two", "three", "four", "seven"]
    finally:
        await db.close()


async def test_two_processes_opening_one_session_share_its_conversation(
    tmp_path: Path, database_url: str
) -> None:
    """The first segments of one session, stored at once by two platforms on one database, land
    in one conversation (the live-session index decides; the loser joins it)."""
    platforms = [
        await Platform.start(make_settings(tmp_path, database_url=database_url)) for _ in range(2)
    ]
    clients = [api_client(p) for p in platforms]
    try:
        await create_user(clients[0], "ana")
        for round_ in range(5):
            sid = f"race-{round_}"
            answers = await asyncio.gather(
                *(post_segments(c, "ana", sid, f"hello from {i}") for i, c in enumerate(clients))
            )
            assert answers[0]["conversation_id"] == answers[1]["conversation_id"], answers
    finally:
        for client in clients:
            await client.aclose()
        for p in platforms:
            await p.close()


async def test_ingest_searches_indexes_on_sqlite(tmp_path: Any) -> None:
    """Scheduling flushes, opening conversations and ending silent ones never scan every
    conversation ever stored."""
    import time

    from nudge.proactive.ingest import IngestRequest, SegmentIn, finish_silent, ingest_batch
    from nudge.store.db import Database
    from nudge.store.migrate import upgrade
    from tests.conftest import sqlite_scans, statements_run

    url = f"sqlite+aiosqlite:///{tmp_path}/plans.db"
    await upgrade(url)
    db = Database(url)
    try:

        def work(conn: Any) -> None:
            _add_users(conn, "a", "b")
            batch = [
                IngestRequest("a", "s1", [SegmentIn(text="one")]),
                IngestRequest("b", "s2", [SegmentIn(text="two")]),
            ]
            with statements_run(conn) as statements:
                ingest_batch(conn, batch)  # opens the sessions
                ingest_batch(conn, batch)  # schedules their flushes
                later = time.time() + 1000  # both silent by then
                ended = finish_silent(conn, later, silence_s=120, limit=10)
            assert len(ended) == 2
            scans = sqlite_scans(conn, statements)  # seen on the driver: FTS5's own reads too
            assert [s for s in scans if "conversations_fts_config" not in s] == []
            assert len(statements) >= 3

        await db.write(work)
    finally:
        await db.close()
