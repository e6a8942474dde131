"""The platform API of contract.md §5: apps, keys, users, facts, installs, devices, inbox."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from nudge.platform import Platform
from tests.conftest import ADMIN, MENTOR_MANIFEST, ServeASGI, World, make_world, wait_for


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_admin_calls_need_the_admin_token(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/apps", json={"manifest": {"name": "X"}}, headers=bearer("nope"))
    assert r.status_code == 401
    r = await client.post("/v1/users", json={"name": "X"}, headers=bearer("nope"))
    assert r.status_code == 401


async def test_create_app_returns_secrets_once(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/apps", json={"manifest": MENTOR_MANIFEST})
    assert r.status_code == 201
    body = r.json()
    assert body["app_secret"].startswith("sk_") and len(body["app_secret"]) == 35
    assert body["webhook_secret"].startswith("whsec_")
    listing = (await client.get(f"/v1/apps/{body['app_id']}")).json()
    assert body["app_secret"] not in json.dumps(listing)
    assert (
        listing["manifest"]["proactive_notification"]["scopes"]
        == MENTOR_MANIFEST["proactive_notification"]["scopes"]
    )


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        ({}, "manifest.name"),
        ({"name": ""}, "manifest.name"),
        ({"name": "A", "capabilities": ["teleport"]}, "manifest.capabilities"),
        ({"name": "A", "capabilities": ["external_integration"]}, "external_integration"),
        (
            {
                "name": "A",
                "capabilities": ["external_integration"],
                "external_integration": {
                    "triggers_on": "transcript_processed",
                    "webhook_url": "ftp://x",
                },
            },
            "manifest.external_integration.webhook_url",
        ),
        (
            {
                "name": "A",
                "capabilities": ["external_integration"],
                "external_integration": {
                    "triggers_on": "sometimes",
                    "webhook_url": "https://a.example",
                },
            },
            "manifest.external_integration.triggers_on",
        ),
        (
            {
                "name": "A",
                "capabilities": ["external_integration", "proactive_notification"],
                "external_integration": {
                    "triggers_on": "transcript_processed",
                    "webhook_url": "https://a.example",
                },
                "proactive_notification": {"scopes": ["user_password"]},
            },
            "manifest.proactive_notification.scopes",
        ),
        (
            {
                "name": "A",
                "capabilities": ["proactive_notification"],
                "proactive_notification": {"scopes": []},
            },
            "capabilities",
        ),
        (
            {
                "name": "A",
                "capabilities": ["external_integration"],
                "external_integration": {
                    "triggers_on": "memory_creation",
                    "webhook_url": "https://a.example",
                    "setup_completed_url": "javascript:alert(1)",
                },
            },
            "setup_completed_url",
        ),
    ],
)
async def test_bad_manifest_is_422_naming_the_field(
    client: httpx.AsyncClient, manifest: dict[str, Any], field: str
) -> None:
    r = await client.post("/v1/apps", json={"manifest": manifest})
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]
    assert (await client.get("/v1/apps")).json() == []


async def test_keys_create_list_revoke(client: httpx.AsyncClient, world: World) -> None:
    created = (await client.post(f"/v1/apps/{world.app_id}/keys")).json()
    keys = (await client.get(f"/v1/apps/{world.app_id}/keys")).json()
    assert {k["key_id"] for k in keys} >= {created["key_id"]}
    assert created["app_secret"] not in json.dumps(keys)
    r = await client.delete(f"/v1/apps/{world.app_id}/keys/{created['key_id']}")
    assert r.status_code == 204
    again = await client.delete(f"/v1/apps/{world.app_id}/keys/{created['key_id']}")
    assert again.status_code == 404
    assert (await client.get("/v1/apps/app_nope/keys")).status_code == 404


async def test_users_and_facts(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/users", json={"name": "Ana", "facts": ["likes tea"]})
    assert r.status_code == 201
    uid, token = r.json()["uid"], r.json()["user_token"]
    r = await client.post(
        f"/v1/users/{uid}/facts", json={"facts": ["runs at 7"]}, headers=bearer(token)
    )
    assert r.json()["facts"] == ["likes tea", "runs at 7"]
    assert (await client.get(f"/v1/users/{uid}/facts")).json()["facts"] == [
        "likes tea",
        "runs at 7",
    ]
    dup = await client.post("/v1/users", json={"uid": uid, "name": "Again"})
    assert dup.status_code == 409


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "a\x00b"},
        {"name": "A", "uid": "has space"},
        {"name": "A", "facts": [""]},
        {"name": "A", "facts": "not a list"},
        {"name": "A", "x": 1},
    ],
)
async def test_bad_user_is_422(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    r = await client.post("/v1/users", json=body)
    assert r.status_code == 422
    assert isinstance(r.json()["detail"], str)


async def test_user_token_reaches_only_its_user(client: httpx.AsyncClient, world: World) -> None:
    other = (await client.post("/v1/users", json={"uid": "bob", "name": "Bob"})).json()
    me = bearer(world.user_token)
    assert (await client.get(f"/v1/users/{world.uid}/notifications", headers=me)).status_code == 200
    r = await client.get("/v1/users/bob/notifications", headers=me)
    assert r.status_code == 403
    r = await client.get(f"/v1/users/{world.uid}/facts", headers=bearer(other["user_token"]))
    assert r.status_code == 403
    # A user token is not an admin token, and an app secret is not a user token.
    assert (
        await client.post("/v1/apps", json={"manifest": {"name": "X"}}, headers=me)
    ).status_code == 401
    r = await client.get(f"/v1/users/{world.uid}/notifications", headers=bearer(world.app_secret))
    assert r.status_code == 401


async def test_install_grants_only_requested_scopes(client: httpx.AsyncClient) -> None:
    manifest = {**MENTOR_MANIFEST, "proactive_notification": {"scopes": ["user_name"]}}
    app = (await client.post("/v1/apps", json={"manifest": manifest})).json()
    await client.post("/v1/users", json={"uid": "u1", "name": "U"})
    r = await client.post(f"/v1/users/u1/apps/{app['app_id']}", json={"scopes": ["user_facts"]})
    assert r.status_code == 422 and "not requested" in r.json()["detail"]
    r = await client.post(f"/v1/users/u1/apps/{app['app_id']}", json={"scopes": ["user_name"]})
    assert r.status_code == 200 and r.json()["scopes"] == ["user_name"]
    r = await client.post("/v1/users/u1/apps/app_missing", json={"scopes": []})
    assert r.status_code == 404
    r = await client.post(f"/v1/users/nobody/apps/{app['app_id']}", json={"scopes": []})
    assert r.status_code == 404


def setup_app(completed: set[str], seen: list[str]) -> FastAPI:
    """A local app answering ``GET setup_completed_url?uid=`` (Omi's install-time check)."""
    api = FastAPI()

    @api.get("/setup")
    async def setup(uid: str) -> dict[str, bool]:
        seen.append(uid)
        return {"is_setup_completed": uid in completed}

    return api


async def test_install_checks_setup_completed_url(client: httpx.AsyncClient) -> None:
    completed: set[str] = set()
    seen: list[str] = []
    async with ServeASGI(setup_app(completed, seen)) as setup:
        manifest = {
            "name": "Needs Setup",
            "capabilities": ["external_integration"],
            "external_integration": {
                "triggers_on": "memory_creation",
                "webhook_url": "http://127.0.0.1:9/hook",
                "setup_completed_url": f"http://127.0.0.1:{setup.port}/setup",
                "auth_steps": [{"name": "Connect", "url": "https://auth.example/start?x=1"}],
            },
        }
        app = (await client.post("/v1/apps", json={"manifest": manifest})).json()
        await client.post("/v1/users", json={"uid": "u1", "name": "U"})
        r = await client.post(f"/v1/users/u1/apps/{app['app_id']}", json={"scopes": []})
        assert r.status_code == 409 and "not completed" in r.json()["detail"]
        assert seen == ["u1"]
        completed.add("u1")
        r = await client.post(f"/v1/users/u1/apps/{app['app_id']}", json={"scopes": []})
        assert r.status_code == 200
        assert r.json()["auth_steps"][0]["url"] == "https://auth.example/start?x=1&uid=u1"


async def test_devices(client: httpx.AsyncClient, world: World) -> None:
    base = f"/v1/users/{world.uid}/devices"
    a = await client.post(base, json={"platform": "fcm", "token": "fcm-token-1"})
    assert a.status_code == 201
    again = await client.post(base, json={"platform": "fcm", "token": "fcm-token-1"})
    assert again.json()["id"] == a.json()["id"] and again.json()["created"] is False
    sub = {
        "endpoint": "https://fcm.googleapis.com/fcm/send/abc",
        "keys": {"p256dh": "BKey", "auth": "auth"},
    }
    assert (
        await client.post(base, json={"platform": "webpush", "subscription": sub})
    ).status_code == 201
    listed = (await client.get(base)).json()
    assert sorted(d["platform"] for d in listed) == ["fcm", "webpush"]
    assert "fcm-token-1" not in json.dumps(listed)
    assert (await client.delete(f"{base}/{a.json()['id']}")).status_code == 204
    assert (await client.delete(f"{base}/{a.json()['id']}")).status_code == 404
    assert len((await client.get(base)).json()) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"platform": "pager", "token": "x"},
        {"platform": "fcm"},
        {"platform": "fcm", "token": ""},
        {"platform": "apns", "token": "not-hex"},
        {"platform": "webpush", "subscription": {"endpoint": "https://x"}},
        {
            "platform": "webpush",
            "subscription": {
                "endpoint": "file:///etc/passwd",
                "keys": {"p256dh": "a", "auth": "b"},
            },
        },
    ],
)
async def test_bad_device_is_422(
    client: httpx.AsyncClient, world: World, body: dict[str, Any]
) -> None:
    r = await client.post(f"/v1/users/{world.uid}/devices", json=body)
    assert r.status_code == 422, r.text
    assert (await client.get(f"/v1/users/{world.uid}/devices")).json() == []


async def test_inbox_pagination_and_read(client: httpx.AsyncClient, world: World) -> None:
    for i in range(5):
        r = await client.post(
            f"/v2/integrations/{world.app_id}/notification",
            params={"uid": world.uid, "message": f"m{i}"},
            headers=bearer(world.app_secret),
        )
        assert r.status_code == 200
    page1 = (await client.get(f"/v1/users/{world.uid}/notifications", params={"limit": 2})).json()
    assert [n["body"] for n in page1["items"]] == ["m4", "m3"]
    page2 = (
        await client.get(
            f"/v1/users/{world.uid}/notifications",
            params={"limit": 2, "cursor": page1["next_cursor"]},
        )
    ).json()
    assert [n["body"] for n in page2["items"]] == ["m2", "m1"]
    page3 = (
        await client.get(
            f"/v1/users/{world.uid}/notifications",
            params={"limit": 2, "cursor": page2["next_cursor"]},
        )
    ).json()
    assert [n["body"] for n in page3["items"]] == ["m0"] and page3["next_cursor"] is None
    nid = page1["items"][0]["id"]
    r = await client.post(
        f"/v1/users/{world.uid}/notifications/{nid}/read", headers=bearer(world.user_token)
    )
    assert r.status_code == 200
    items = (await client.get(f"/v1/users/{world.uid}/notifications")).json()["items"]
    assert [n["read"] for n in items] == [True, False, False, False, False]
    assert (await client.post(f"/v1/users/{world.uid}/notifications/n_x/read")).status_code == 404
    bad = await client.get(f"/v1/users/{world.uid}/notifications", params={"limit": 0})
    assert bad.status_code == 422


async def test_chat_history_holds_what_the_app_sent(
    client: httpx.AsyncClient, world: World
) -> None:
    for text in ("first", "second"):
        await client.post(
            f"/v2/integrations/{world.app_id}/notification",
            params={"uid": world.uid, "message": text},
            headers=bearer(world.app_secret),
        )
    chat = (await client.get(f"/v1/users/{world.uid}/apps/{world.app_id}/messages")).json()
    assert [(m["sender"], m["text"]) for m in chat["messages"]] == [
        ("app", "first"),
        ("app", "second"),
    ]


async def test_health_ready_metrics_docs(client: httpx.AsyncClient, world: World) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = (await client.get("/readyz")).json()
    assert ready["status"] == "ok" and "inbox" in ready["providers"]
    await client.post(
        f"/v2/integrations/{world.app_id}/notification",
        params={"uid": world.uid, "message": "m"},
        headers=bearer(world.app_secret),
    )
    metrics = (await client.get("/metrics")).text
    assert 'nudge_notifications_accepted_total{kind="direct"} 1.0' in metrics
    assert (await client.get("/openapi.json")).json()["paths"][
        "/v2/integrations/{app_id}/notification"
    ]
    assert (await client.get("/docs")).status_code == 200


async def test_sse_stream_is_live(
    client: httpx.AsyncClient, world: World, platform: Platform, live_url: str
) -> None:
    """A notification accepted after the stream opened arrives on it without polling."""
    received: list[dict[str, Any]] = []

    async def listen() -> None:
        async with (
            httpx.AsyncClient(base_url=live_url, timeout=10) as live,
            live.stream(
                "GET",
                f"/v1/users/{world.uid}/notifications/stream",
                headers=bearer(world.user_token),
            ) as r,
        ):
            assert r.status_code == 200
            event = None
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "notification":
                    received.append(json.loads(line.split(":", 1)[1]))
                    return

    task = asyncio.create_task(listen())
    await wait_for(lambda: _has_subscriber(platform, world.uid))
    r = await client.post(
        f"/v2/integrations/{world.app_id}/notification",
        params={"uid": world.uid, "message": "live!"},
        headers=bearer(world.app_secret),
    )
    await asyncio.wait_for(task, 10)
    assert received[0]["body"] == "live!"
    assert received[0]["id"] == r.json()["notification_id"]
    assert received[0]["title"] == "Mentor says"


async def _has_subscriber(platform: Platform, uid: str) -> bool:
    return bool(getattr(platform.bus, "_subscribers", {}).get(uid))


async def test_sse_needs_auth(client: httpx.AsyncClient, world: World) -> None:
    r = await client.get(f"/v1/users/{world.uid}/notifications/stream", headers=bearer("bad"))
    assert r.status_code == 401


async def test_a_missing_token_is_named_by_what_the_call_takes(
    client: httpx.AsyncClient, world: World
) -> None:
    calls = {
        f"/v1/users/{world.uid}/notifications": "Bearer <user token or admin token>",
        "/v1/apps": "Bearer <admin token>",
        f"/v2/integrations/{world.app_id}/notification?uid=u&message=hi": "Bearer <app secret>",
    }
    for path, needed in calls.items():
        method = client.post if path.startswith("/v2") else client.get
        r = await method(path, headers={"Authorization": ""})
        assert r.status_code == 401 and needed in r.json()["detail"], (path, r.text)


async def test_admin_world_helper(client: httpx.AsyncClient) -> None:
    w = await make_world(client, uid="carol")
    assert w.uid == "carol" and ADMIN
