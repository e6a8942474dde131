"""Hostile text (NUL, lone surrogates, control characters in ids) is a 422 naming the field on
every surface, on SQLite and PostgreSQL; rows stored with such text before are still read; a user
token without its prefix is refused without a lookup."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import Connection, event, insert, select

from nudge.api.app import create_app
from nudge.core.notifications import NotificationRequest
from nudge.platform import Platform
from nudge.store.models import App, Notification
from tests.conftest import (
    ADMIN,
    MENTOR_MANIFEST,
    ServeASGI,
    World,
    make_settings,
    make_world,
    running,
    wait_for,
)

BAD = "\ud800"  # a lone surrogate: JSON can carry it (as an escape), UTF-8 cannot
NUL = "\x00"


@dataclass
class Served:
    client: httpx.AsyncClient
    platform: Platform
    world: World

    def live(self) -> ServeASGI:
        """The same platform over real HTTP (SSE, WebSocket)."""
        app = create_app(self.platform.settings, platform=self.platform)
        app.state.platform = self.platform
        return ServeASGI(app)


@pytest.fixture
async def served(tmp_path: Path, database_url: str) -> AsyncIterator[Served]:
    """An app, a user who installed it, on SQLite and on PostgreSQL."""
    async with running(make_settings(tmp_path, database_url=database_url)) as (platform, client):
        yield Served(client, platform, await make_world(client))


def raw_json(value: Any) -> dict[str, Any]:
    """Request arguments for a JSON body sent as it is: httpx's own encoder cannot carry a lone
    surrogate, ``json.dumps`` writes it as the ``\\ud800`` escape a hostile client would send."""
    return {"content": json.dumps(value), "headers": {"Content-Type": "application/json"}}


def as_app(w: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {w.app_secret}"}


def as_user(w: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {w.user_token}"}


WEBPUSH_KEYS = {"p256dh": "BOr", "auth": "k8J"}

# (who, method, path, extra request arguments, what the 422 must name). {uid}, {app} are the
# world's. "app" and "user" cases need only that credential: what an outside caller can reach.
CASES: list[tuple[str, str, str, dict[str, Any], str]] = [
    ("user", "GET", "/v1/users/a%00b", {}, "uid: must not contain NUL"),
    ("user", "GET", "/v1/users/{uid}/notifications", {"params": {"cursor": NUL}}, "cursor:"),
    ("user", "POST", "/v1/users/{uid}/notifications/n%00/read", {}, "notification_id:"),
    ("user", "DELETE", "/v1/users/{uid}/devices/d%00", {}, "device_id:"),
    ("user", "POST", "/v1/users/{uid}/facts", raw_json({"facts": [BAD]}), "facts.0: must not"),
    ("user", "POST", "/v1/users/{uid}/facts", raw_json({"facts": [NUL]}), "facts.0: must not"),
    (
        "user",
        "POST",
        "/v1/users/{uid}/devices",
        {"json": {"platform": "fcm", "token": NUL}},
        "token:",
    ),
    (
        "user",
        "POST",
        "/v1/users/{uid}/devices",
        {
            "json": {
                "platform": "webpush",
                "subscription": {"endpoint": "https://push.example/\x00", "keys": WEBPUSH_KEYS},
            }
        },
        "endpoint: must not contain NUL",
    ),
    (
        "user",
        "POST",
        "/v1/users/{uid}/devices",
        raw_json(
            {
                "platform": "webpush",
                "subscription": {"endpoint": "https://p.example/", "keys": {"p256dh": BAD}},
            }
        ),
        "subscription.keys.p256dh: must not contain lone surrogates",
    ),
    ("user", "POST", "/v1/users/{uid}/sessions/s%00/finish", {}, "session_id:"),
    (
        "user",
        "POST",
        "/v1/users/{uid}/sessions/s1/finish",
        {"json": {"title": "a\x00"}},
        "title: must not contain NUL",
    ),
    (
        "user",
        "POST",
        "/v1/users/{uid}/sessions/s1/segments",
        raw_json({"segments": [{"text": BAD}]}),
        "segments.0.text: must not contain lone surrogates",
    ),
    (
        "user",
        "POST",
        "/v1/users/{uid}/sessions/s1/segments",
        {"json": {"segments": [{"text": "hi", "speaker": "A\nB"}]}},
        "segments.0.speaker: must be one line",
    ),
    (
        "admin",
        "POST",
        "/v1/users/a%00b/sessions/s1/segments",
        {"json": {"segments": [{"text": "hi"}]}},
        "uid:",
    ),
    ("admin", "POST", "/v1/users", {"json": {"name": "Ana\nB"}}, "name: must be one line"),
    ("admin", "GET", "/v1/apps/a%00b", {}, "app_id:"),
    ("admin", "DELETE", "/v1/apps/{app}/keys/k%00", {}, "key_id:"),
    (
        "admin",
        "POST",
        "/v1/apps",
        {"json": {"manifest": {"name": "A", "description": "d\x00"}}},
        "manifest.description: must not contain NUL",
    ),
    (
        "admin",
        "POST",
        "/v1/apps",
        raw_json(
            {
                "manifest": {
                    **MENTOR_MANIFEST,
                    "external_integration": {
                        "triggers_on": "transcript_processed",
                        "webhook_url": f"https://a.example/{BAD}",
                    },
                }
            }
        ),
        "manifest.external_integration.webhook_url: must not contain lone surrogates",
    ),
    ("app", "GET", "/v1/apps/{app}/traces", {"params": {"session_id": NUL}}, "session_id:"),
    ("app", "GET", "/v2/integrations/{app}/notifications/n%00", {}, "notification_id:"),
    (
        "app",
        "POST",
        "/v2/integrations/{app}/notification",
        {"params": {"uid": "a\x00b", "message": "hi"}},
        "uid: must not contain NUL",
    ),
    (
        "app",
        "POST",
        "/v2/integrations/app%00x/notification",
        {"params": {"uid": "{uid}", "message": "hi"}},
        "app_id: must not contain NUL",
    ),
    (
        "app",
        "POST",
        "/v1/integrations/notification",  # a body model with plain str fields: the edge check
        {"json": {"aid": "{app}\x00", "uid": "{uid}", "message": "hi"}},
        "aid: must not contain NUL",
    ),
    (
        "app",
        "POST",
        "/api/notifications/send",
        {"json": {"user_id": "a\x00", "message": "hi"}},
        "user_id: must not contain NUL",
    ),
    (
        "app",
        "POST",
        "/api/notifications/send",
        {"json": {"user_id": "{uid}", "type": "t\x00", "message": "hi"}},
        "type: must not contain NUL",
    ),
    (
        "app",
        "POST",
        "/api/notifications/send",
        raw_json({"user_id": "{uid}", "message": "hi", "data": {"k": BAD}}),
        "data.k: must not contain lone surrogates",
    ),
    (
        "app",
        "POST",
        "/api/notifications/send",
        raw_json({"user_id": "{uid}", "message": f"hi {BAD}"}),
        "message: must not contain lone surrogates",
    ),
]


def _fill(value: Any, w: World) -> Any:
    if isinstance(value, str):
        return value.replace("{uid}", w.uid).replace("{app}", w.app_id)
    if isinstance(value, dict):
        return {k: _fill(v, w) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, w) for v in value]
    return value


async def test_hostile_text_is_422_naming_the_field(served: Served) -> None:
    """Every case of CASES (one test per database: each case alone would start a platform)."""
    w = served.world
    wrong: list[str] = []
    for who, method, path, extra, fragment in CASES:
        request = _fill(extra, w)
        request["headers"] = {
            **request.get("headers", {}),
            **{"admin": {}, "user": as_user(w), "app": as_app(w)}[who],
        }
        r = await served.client.request(method, _fill(path, w), **request)
        if r.status_code != 422 or fragment not in r.json()["detail"]:
            wrong.append(f"{method} {path} {fragment!r}: {r.status_code} {r.text}")
    assert not wrong, "\n".join(wrong)
    # And nothing was stored that a read would trip on.
    inbox = await served.client.get(f"/v1/users/{w.uid}/notifications")
    assert inbox.status_code == 200, inbox.text
    assert (await served.client.get("/v1/apps")).status_code == 200


async def test_websocket_refuses_hostile_text(served: Served) -> None:
    w = served.world
    async with served.live() as live:
        listen = live.url.replace("http://", "ws://") + "/v1/users/{}/listen?session_id=s1"
        async with websockets.connect(listen.format("a%00b") + f"&token={ADMIN}") as ws:
            refused = json.loads(await ws.recv())
        assert refused["status"] == 422 and refused["error"].startswith("uid: must not contain NUL")

        async with websockets.connect(listen.format(w.uid) + f"&token={w.user_token}") as ws:
            await ws.send(json.dumps([{"text": f"x {BAD}"}]))
            refused = json.loads(await ws.recv())
            assert refused["status"] == 422
            assert "0.text: must not contain lone surrogates" in refused["error"]
            await ws.send(json.dumps([{"text": "fine"}]))
            assert json.loads(await ws.recv())["accepted"] == 1


async def test_a_hostile_request_does_not_fail_its_batch(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused before the acceptance batch: its neighbours are written in one batch, not retried
    one by one after the batch failed."""
    w = served.world

    def send(message: str) -> Any:
        request = raw_json({"user_id": w.uid, "message": message})
        request["headers"].update(as_app(w))
        return served.client.post("/api/notifications/send", **request)

    with caplog.at_level(logging.WARNING, logger="nudge.store"):
        answers = await asyncio.gather(
            *(send(f"good {i}") for i in range(4)), send(f"bad {BAD}"), send("bad \x00")
        )
    assert [r.status_code for r in answers] == [200] * 4 + [422, 422]
    assert not [r for r in caplog.records if "one by one" in r.getMessage()]


async def test_a_user_token_without_its_prefix_is_refused_without_a_lookup(
    served: Served,
) -> None:
    statements: list[str] = []

    def record(_c: Any, _cursor: Any, sql: str, *_: Any) -> None:
        statements.append(sql)

    engine = served.platform.db.read_engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        for token in ("not-a-token", "sk_" + "0" * 32, "ut_" + "0" * 47, "ut_" + "G" * 48):
            r = await served.client.get(
                f"/v1/users/{served.world.uid}", headers={"Authorization": f"Bearer {token}"}
            )
            assert r.status_code == 401, token
            assert r.json()["detail"].startswith("malformed token"), r.text
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert not [s for s in statements if "token_hash" in s], statements
    # A well-formed token is still looked up: unknown is 401, the user's own passes.
    unknown = {"Authorization": "Bearer ut_" + "0" * 48}
    r = await served.client.get(f"/v1/users/{served.world.uid}", headers=unknown)
    assert r.status_code == 401 and r.json()["detail"].startswith("unknown token")
    mine = await served.client.get(f"/v1/users/{served.world.uid}", headers=as_user(served.world))
    assert mine.status_code == 200


async def _subscribed(platform: Platform, uid: str) -> bool:
    local = getattr(platform.bus, "local", platform.bus)  # a transport bus keeps a local one
    return uid in local._subscribers


async def _sse_notifications(url: str, path: str, token: str, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=url, timeout=10) as live,
        live.stream("GET", path, headers=headers) as r,
    ):
        assert r.status_code == 200
        kind = None
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind == "notification":
                got.append(json.loads(line.split(":", 1)[1]))
                if len(got) == count:
                    return got
    return got


async def test_rows_stored_with_bad_text_are_still_read(served: Served) -> None:
    """Rows written before the edge checks (here straight into the database, as the old code
    stored them) are read through every API that shows them: U+FFFD stands for what UTF-8 cannot
    carry, the rest is as stored. The live stream goes through the event transport (LISTEN/NOTIFY
    on PostgreSQL)."""
    c, platform, w = served.client, served.platform, served.world
    hostile = f"x{BAD}y"

    def old_app(conn: Connection) -> None:
        manifest = {
            **MENTOR_MANIFEST,
            "name": "Old",
            "external_integration": {
                "triggers_on": "transcript_processed",
                "webhook_url": f"https://old.example/{hostile}",
            },
        }
        conn.execute(
            insert(App).values(
                id="app_old",
                name="Old",
                description="",
                manifest=manifest,
                webhook_secret="whsec_x",
                status="active",
                status_reason="",
                created_at=0.0,
            )
        )

    await platform.db.write(old_app)
    async with served.live() as live:
        stream = asyncio.create_task(
            _sse_notifications(
                live.url, f"/v1/users/{w.uid}/notifications/stream", w.user_token, count=1
            )
        )
        await wait_for(lambda: _subscribed(platform, w.uid))
        # Accepted as the old edge accepted it: the data goes into the batch unchecked.
        accepted = await platform.acceptor.accept(
            NotificationRequest(app_id=w.app_id, uid=w.uid, message="old", data={"k": hostile})
        )
        await platform.bus.wake_workers()
        nid = accepted.notification_id
        (event,) = await asyncio.wait_for(stream, 15)
    assert event["id"] == nid and event["data"]["k"] == "x\ufffdy"

    apps = await c.get("/v1/apps")
    assert apps.status_code == 200, apps.text
    (old,) = [a for a in apps.json() if a["app_id"] == "app_old"]
    assert old["manifest"]["external_integration"]["webhook_url"] == "https://old.example/x\ufffdy"
    assert (await c.get("/v1/apps/app_old")).status_code == 200

    inbox = await c.get(f"/v1/users/{w.uid}/notifications", headers=as_user(w))
    assert inbox.status_code == 200, inbox.text
    assert inbox.json()["items"][0]["data"]["k"] == "x\ufffdy"
    status = await c.get(f"/v2/integrations/{w.app_id}/notifications/{nid}", headers=as_app(w))
    assert status.status_code == 200, status.text
    assert status.json()["data"]["k"] == "x\ufffdy"
    # It is stored as it came: only the answers replace.
    query = select(Notification.data).where(Notification.id == nid)
    data = await platform.db.query(lambda conn: conn.execute(query).scalar_one())
    assert data["k"] == hostile
