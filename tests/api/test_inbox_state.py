"""The inbox state routes (read, seen, archived, read-all, the unread count) and their live
``state`` events, on SQLite and PostgreSQL, and across two API processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from nudge.config import Settings
from nudge.sdk.client import AsyncNudgeClient, NudgeClient
from nudge.sdk.errors import APIError
from tests.conftest import (
    ADMIN,
    MENTOR_MANIFEST,
    Server,
    World,
    make_settings,
    make_world,
    start_server,
    wait_for,
)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url=database_url)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def send(client: httpx.AsyncClient, world: World, message: str) -> str:
    r = await client.post(
        f"/v2/integrations/{world.app_id}/notification",
        params={"uid": world.uid, "message": message},
        headers=bearer(world.app_secret),
    )
    assert r.status_code == 200, r.text
    notification_id: str = r.json()["notification_id"]
    return notification_id


async def unread(client: httpx.AsyncClient, uid: str, token: str) -> int:
    r = await client.get(f"/v1/users/{uid}/notifications/unread-count", headers=bearer(token))
    assert r.status_code == 200, r.text
    count: int = r.json()["unread"]
    return count


async def test_patch_sets_and_clears_each_flag(client: httpx.AsyncClient, world: World) -> None:
    first = await send(client, world, "first")
    second = await send(client, world, "second")
    user = bearer(world.user_token)
    base = f"/v1/users/{world.uid}/notifications"
    assert await unread(client, world.uid, world.user_token) == 2

    r = await client.patch(f"{base}/{first}", json={"read": True, "seen": True}, headers=user)
    assert r.status_code == 200, r.text
    note = r.json()
    assert (note["id"], note["body"]) == (first, "first")
    assert (note["read"], note["seen"], note["archived"]) == (True, True, False)
    assert await unread(client, world.uid, world.user_token) == 1

    # Clearing one flag leaves the others as they were.
    r = await client.patch(f"{base}/{first}", json={"read": False}, headers=user)
    assert (r.json()["read"], r.json()["seen"]) == (False, True)
    assert await unread(client, world.uid, world.user_token) == 2

    # Archived: hidden from the inbox and the unread count, shown with ?archived=true.
    r = await client.patch(f"{base}/{second}", json={"archived": True}, headers=user)
    assert r.json()["archived"] is True and r.json()["read"] is False
    assert [n["id"] for n in (await client.get(base, headers=user)).json()["items"]] == [first]
    shown = (await client.get(base, params={"archived": "true"}, headers=user)).json()["items"]
    assert [(n["id"], n["archived"]) for n in shown] == [(second, True), (first, False)]
    assert await unread(client, world.uid, world.user_token) == 1

    r = await client.patch(f"{base}/{second}", json={"archived": False}, headers=user)
    assert [n["id"] for n in (await client.get(base, headers=user)).json()["items"]] == [
        second,
        first,
    ]
    # The admin token may act for the user; the old read route still works.
    r = await client.post(f"{base}/{second}/read")
    assert r.json() == {"status": "ok"}
    assert await unread(client, world.uid, ADMIN) == 1


async def test_read_all_up_to_an_id_then_everything(
    client: httpx.AsyncClient, world: World
) -> None:
    ids = [await send(client, world, f"note {i}") for i in range(3)]
    base = f"/v1/users/{world.uid}/notifications"
    user = bearer(world.user_token)
    r = await client.post(f"{base}/read-all", json={"up_to": ids[1]}, headers=user)
    assert r.status_code == 200, r.text
    assert r.json() == {"changed": 2, "unread": 1}
    items = (await client.get(base, headers=user)).json()["items"]
    assert [(n["id"], n["read"]) for n in items] == [
        (ids[2], False),
        (ids[1], True),
        (ids[0], True),
    ]

    # No body: everything; again: nothing left to change.
    r = await client.post(f"{base}/read-all", headers=user)
    assert r.json() == {"changed": 1, "unread": 0}
    r = await client.post(f"{base}/read-all", json={}, headers=user)
    assert r.json() == {"changed": 0, "unread": 0}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "at least one of read, seen, archived"),
        ({"read": None}, "at least one of read, seen, archived"),
        ({"read": "yes"}, "read"),
        ({"seen": 1}, "seen"),
        ({"pinned": True}, "pinned"),
        ([True], "dictionary or object"),
    ],
)
async def test_a_bad_patch_body_is_a_422_naming_the_field(
    client: httpx.AsyncClient, world: World, body: Any, named: str
) -> None:
    note = await send(client, world, "hello")
    r = await client.patch(
        f"/v1/users/{world.uid}/notifications/{note}", json=body, headers=bearer(world.user_token)
    )
    assert r.status_code == 422, r.text
    assert named in r.json()["detail"]
    listed = (await client.get(f"/v1/users/{world.uid}/notifications")).json()["items"]
    assert (listed[0]["read"], listed[0]["seen"], listed[0]["archived"]) == (False, False, False)


async def test_bad_read_all_bodies_and_missing_users(
    client: httpx.AsyncClient, world: World
) -> None:
    base = f"/v1/users/{world.uid}/notifications"
    for body, named in (({"up_to": 5}, "up_to"), ({"before": "n_1"}, "before")):
        r = await client.post(f"{base}/read-all", json=body)
        assert r.status_code == 422 and named in r.json()["detail"], r.text
    r = await client.post(
        f"{base}/read-all", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text
    for method, path in (
        ("POST", "/v1/users/nobody/notifications/read-all"),
        ("GET", "/v1/users/nobody/notifications/unread-count"),
    ):
        r = await client.request(method, path)
        assert r.status_code == 404 and "nobody" in r.json()["detail"], r.text


async def test_another_users_notification_is_not_found(
    client: httpx.AsyncClient, world: World
) -> None:
    mine = await send(client, world, "for Ana only")
    other = await make_world(client, uid="bob")
    path = f"/v1/users/{other.uid}/notifications/{mine}"
    for r in (
        await client.patch(path, json={"read": True}, headers=bearer(other.user_token)),
        await client.post(f"{path}/read", headers=bearer(other.user_token)),
        await client.patch(
            f"/v1/users/{other.uid}/notifications/n_missing",
            json={"archived": True},
            headers=bearer(other.user_token),
        ),
    ):
        assert r.status_code == 404 and "not found for user 'bob'" in r.json()["detail"], r.text
    # Bob's token does not act for Ana.
    r = await client.patch(
        f"/v1/users/{world.uid}/notifications/{mine}",
        json={"read": True},
        headers=bearer(other.user_token),
    )
    assert r.status_code == 403, r.text
    # Nothing changed for Ana; read-all for Bob leaves Ana's alone.
    await client.post(f"/v1/users/{other.uid}/notifications/read-all")
    assert await unread(client, world.uid, world.user_token) == 1


@asynccontextmanager
async def live_events(url: str, uid: str, token: str) -> AsyncIterator[list[tuple[str, Any]]]:
    """The user's stream read in the background: (event, data) pairs as they come, from when
    it is ready."""
    received: list[tuple[str, Any]] = []
    ready = asyncio.Event()

    async def listen() -> None:
        async with (
            httpx.AsyncClient(base_url=url, timeout=30) as live,
            live.stream("GET", f"/v1/users/{uid}/notifications/stream", headers=bearer(token)) as r,
        ):
            assert r.status_code == 200
            event = ""
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    if event == "ready":
                        ready.set()
                    else:
                        received.append((event, json.loads(line.split(":", 1)[1])))

    task = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(ready.wait(), 15)
        yield received
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def states(received: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    return [data for event, data in received if event == "state"]


async def test_state_changes_reach_the_live_stream(
    client: httpx.AsyncClient, world: World, live_url: str
) -> None:
    first = await send(client, world, "first")
    second = await send(client, world, "second")
    base = f"/v1/users/{world.uid}/notifications"
    async with live_events(live_url, world.uid, world.user_token) as received:
        await client.patch(f"{base}/{first}", json={"seen": True}, headers=bearer(world.user_token))
        await client.patch(f"{base}/{first}", json={"archived": True})
        await client.post(f"{base}/{second}/read")
        await wait_for(lambda: _at_least(states(received), 3))
        # A refused change tells the stream nothing.
        assert (await client.patch(f"{base}/n_missing", json={"read": True})).status_code == 404
        await client.post(f"{base}/read-all")
        await wait_for(lambda: _at_least(states(received), 4))
    assert states(received) == [
        {"id": first, "read": False, "seen": True, "archived": False, "unread": 2},
        {"id": first, "read": False, "seen": True, "archived": True, "unread": 1},
        {"id": second, "read": True, "seen": False, "archived": False, "unread": 0},
        {"read_all": True, "up_to": None, "changed": 1, "unread": 0},
    ]


async def _at_least(items: list[Any], n: int) -> bool:
    return len(items) >= n


async def test_a_change_on_one_process_reaches_a_stream_on_another(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two ``nudge serve`` processes on one PostgreSQL: the stream is open on the first, the
    notification is marked read through the second (the event crosses by LISTEN/NOTIFY)."""
    env = {"NUDGE_DATABASE_URL": postgres_url}
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    one = start_server(tmp_path / "one", env)
    two = start_server(tmp_path / "two", env)
    try:
        async with httpx.AsyncClient(base_url=one.url, headers=bearer(ADMIN), timeout=30) as c:
            world = await make_world(c)
            note = await send(c, world, "cross")
            async with live_events(one.url, world.uid, world.user_token) as received:
                async with httpx.AsyncClient(base_url=two.url, timeout=30) as other:
                    r = await other.patch(
                        f"/v1/users/{world.uid}/notifications/{note}",
                        json={"read": True},
                        headers=bearer(world.user_token),
                    )
                    assert r.status_code == 200, r.text
                await wait_for(lambda: _at_least(states(received), 1), timeout=15)
        assert states(received) == [
            {"id": note, "read": True, "seen": False, "archived": False, "unread": 0}
        ]
    finally:
        one.stop()
        two.stop()


async def test_the_sdk_marks_reads_all_and_counts(
    client: httpx.AsyncClient, world: World, live_url: str
) -> None:
    ids = [await send(client, world, f"sdk {i}") for i in range(3)]
    async with AsyncNudgeClient(live_url, world.app_id, world.app_secret) as nudge:
        note = await nudge.mark_notification(
            world.uid, ids[0], user_token=world.user_token, archived=True, seen=True
        )
        assert (note.id, note.archived, note.seen, note.read) == (ids[0], True, True, False)
        assert await nudge.unread_count(world.uid, user_token=world.user_token) == 2
        done = await nudge.read_all(world.uid, user_token=world.user_token, up_to=ids[1])
        assert (done.changed, done.unread) == (2, 1)
        with pytest.raises(ValueError, match="at least one"):
            await nudge.mark_notification(world.uid, ids[2], user_token=world.user_token)
        # The app secret is not the user's credential.
        with pytest.raises(APIError) as refused:
            await nudge.unread_count(world.uid, user_token=world.app_secret)
        assert refused.value.status_code == 401

    def blocking() -> tuple[int, int]:  # the same calls on the blocking client (in a thread:
        # the server runs on this test's event loop)
        with NudgeClient(live_url, world.app_id, world.app_secret) as nudge:
            changed = nudge.read_all(world.uid, user_token=ADMIN).changed
            return changed, nudge.unread_count(world.uid, user_token=world.user_token)

    assert await asyncio.to_thread(blocking) == (1, 0)


def test_the_cli_shows_and_changes_the_inbox_state(tmp_path: Path, server: Server) -> None:
    """``nudge users inbox|unread|mark|read-all``, over HTTP and on the database itself."""
    with httpx.Client(base_url=server.url, headers=bearer(ADMIN), timeout=30) as c:
        app = c.post("/v1/apps", json={"manifest": MENTOR_MANIFEST}).json()
        c.post("/v1/users", json={"uid": "u1", "name": "Ana"}).raise_for_status()
        c.post(f"/v1/users/u1/apps/{app['app_id']}", json={"scopes": []}).raise_for_status()
        ids = [
            c.post(
                f"/v2/integrations/{app['app_id']}/notification",
                params={"uid": "u1", "message": f"cli {i}"},
                headers=bearer(app["app_secret"]),
            ).json()["notification_id"]
            for i in range(2)
        ]
    env = {**server.env, "NUDGE_DATA_DIR": str(tmp_path / "cli-data")}

    def nudge(*args: str, ok: bool = True) -> Any:
        out = subprocess.run(
            [sys.executable, "-m", "nudge.cli", "users", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (out.returncode == 0) == ok, out.stdout + out.stderr
        assert "Traceback" not in out.stderr
        return json.loads(out.stdout) if ok else out.stderr

    remote = ("--url", server.url, "--token", ADMIN)
    assert nudge("unread", "u1", *remote) == {"unread": 2}
    marked = nudge("mark", "u1", ids[0], "--read", "--archived", *remote)
    assert (marked["id"], marked["read"], marked["archived"], marked["seen"]) == (
        ids[0],
        True,
        True,
        False,
    )
    assert [n["id"] for n in nudge("inbox", "u1", *remote)["items"]] == [ids[1]]
    assert len(nudge("inbox", "u1", "--archived", *remote)["items"]) == 2
    assert nudge("read-all", "u1", *remote) == {"changed": 1, "unread": 0}
    assert "at least one of read, seen, archived" in nudge("mark", "u1", ids[0], ok=False)
    assert "404" in nudge("mark", "u1", "n_missing", "--seen", *remote, ok=False)
    # Without --url: the same database, directly.
    assert nudge("mark", "u1", ids[1], "--unread")["read"] is False
    assert nudge("unread", "u1") == {"unread": 1}
    assert nudge("read-all", "u1", "--up-to", ids[0]) == {"changed": 0, "unread": 1}
    assert "not found" in nudge("unread", "nobody", ok=False)


async def test_a_scheduled_notification_enters_the_inbox_at_its_time(
    client: httpx.AsyncClient, world: World
) -> None:
    """Not listed, counted or marked read before its ``send_at``; never if the app cancels it."""

    def at(seconds: float) -> str:
        return datetime.fromtimestamp(time.time() + seconds, UTC).isoformat()

    async def scheduled(message: str, seconds: float) -> str:
        r = await client.post(
            f"/v2/integrations/{world.app_id}/notification",
            params={"uid": world.uid, "message": message, "send_at": at(seconds)},
            headers=bearer(world.app_secret),
        )
        assert r.status_code == 200, r.text
        notification_id: str = r.json()["notification_id"]
        return notification_id

    now = await send(client, world, "now")
    later = await scheduled("in two seconds", 2)
    cancelled = await scheduled("cancelled before its time", 1)
    r = await client.delete(
        f"/v2/integrations/{world.app_id}/notifications/{cancelled}",
        headers=bearer(world.app_secret),
    )
    assert r.status_code == 200, r.text
    base = f"/v1/users/{world.uid}/notifications"

    async def listed() -> list[str]:
        return [n["id"] for n in (await client.get(base)).json()["items"]]

    assert await listed() == [now]
    assert await unread(client, world.uid, ADMIN) == 1
    assert (await client.post(f"{base}/read-all")).json() == {"changed": 1, "unread": 0}

    async def arrived() -> bool:
        return await listed() == [later, now]

    await wait_for(arrived, timeout=15)
    assert await unread(client, world.uid, ADMIN) == 1  # not read by the read-all before it
