"""POST /v2/integrations/{app_id}/notification and /api/notifications/send: every answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, func, select

from nudge.api.app import create_app
from nudge.platform import Platform
from nudge.store.models import ChatMessage, Delivery, Notification
from tests.conftest import MENTOR_MANIFEST, World, make_world, wait_for


def url(app_id: str) -> str:
    return f"/v2/integrations/{app_id}/notification"


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def send(
    c: httpx.AsyncClient, w: World, message: Any = "Hello!", **kw: Any
) -> httpx.Response:
    params = {"uid": w.uid, "message": message}
    params.update(kw.pop("params", {}))
    headers = kw.pop("headers", auth(w.app_secret))
    request = c.build_request(
        "POST",
        url(w.app_id),
        params={k: v for k, v in params.items() if v is not None},
        headers=headers,
        **kw,
    )
    if "Authorization" not in headers:  # drop the client's default admin header
        del request.headers["Authorization"]
    return await c.send(request)


async def row_counts(platform: Platform) -> tuple[int, int, int]:
    def work(conn: Connection) -> tuple[int, int, int]:
        n, d, m = (
            int(conn.scalar(select(func.count()).select_from(table)) or 0)
            for table in (Notification, Delivery, ChatMessage)
        )
        return n, d, m

    return await platform.db.query(work)


def assert_rate_headers(r: httpx.Response) -> None:
    for h in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert h in r.headers, f"{h} missing on a {r.status_code}"
        assert int(r.headers[h]) >= 0


async def test_accepts_and_answers_like_omi(client: httpx.AsyncClient, world: World) -> None:
    r = await send(client, world)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["notification_id"].startswith("n_")
    assert body["devices"] == 0
    assert_rate_headers(r)
    assert r.headers["X-RateLimit-Remaining"] == "9"
    # The slot frees an hour after the end of the minute it was counted in.
    assert 3590 <= int(r.headers["X-RateLimit-Reset"]) <= 3660


async def test_devices_counted_and_each_gets_a_delivery(
    client: httpx.AsyncClient, world: World
) -> None:
    for token in ("tok-a", "tok-b"):
        r = await client.post(
            f"/v1/users/{world.uid}/devices", json={"platform": "log", "token": token}
        )
        assert r.status_code == 201
    r = await send(client, world)
    assert r.json()["devices"] == 2
    nid = r.json()["notification_id"]

    async def all_delivered() -> list[str] | None:
        s = await client.get(
            f"/v2/integrations/{world.app_id}/notifications/{nid}", headers=auth(world.app_secret)
        )
        states = sorted(d["provider"] + ":" + d["state"] for d in s.json()["deliveries"])
        return states if all(x.endswith(":delivered") for x in states) else None

    assert await wait_for(all_delivered) == ["inbox:delivered", "log:delivered", "log:delivered"]


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "missing Authorization"),
        ({"Authorization": "sk_0123"}, "malformed Authorization"),
        ({"Authorization": "Basic abc"}, "malformed Authorization"),
        ({"Authorization": "Bearer "}, "malformed Authorization"),
        ({"Authorization": "Bearer not-a-secret"}, "malformed app secret"),
        ({"Authorization": "Bearer sk_" + "0" * 32}, "unknown or revoked"),
        ({"Authorization": "Bearer sk_" + "A" * 32}, "malformed app secret"),
    ],
)
async def test_401_for_bad_credentials(
    client: httpx.AsyncClient,
    world: World,
    platform: Platform,
    headers: dict[str, str],
    fragment: str,
) -> None:
    before = await row_counts(platform)
    r = await send(client, world, headers=headers)
    assert r.status_code == 401
    assert fragment in r.json()["detail"]
    assert_rate_headers(r)
    assert await row_counts(platform) == before


async def test_401_for_a_key_of_another_app(client: httpx.AsyncClient, world: World) -> None:
    other = (await client.post("/v1/apps", json={"manifest": {"name": "Other"}})).json()
    r = await send(client, world, headers=auth(other["app_secret"]))
    assert r.status_code == 401
    assert "another app" in r.json()["detail"]


async def test_401_for_a_revoked_key_and_other_keys_still_work(
    client: httpx.AsyncClient, world: World
) -> None:
    second = (await client.post(f"/v1/apps/{world.app_id}/keys")).json()
    keys = (await client.get(f"/v1/apps/{world.app_id}/keys")).json()
    assert len(keys) == 2 and all(k["hint"].startswith("sk_") and "…" in k["hint"] for k in keys)
    first_id = keys[0]["key_id"]
    assert (await client.delete(f"/v1/apps/{world.app_id}/keys/{first_id}")).status_code == 204
    assert (await send(client, world)).status_code == 401
    r = await send(client, world, headers=auth(second["app_secret"]))
    assert r.status_code == 200


async def test_404_unknown_user_and_not_installed(
    client: httpx.AsyncClient, world: World, platform: Platform
) -> None:
    before = await row_counts(platform)
    r = await send(client, world, params={"uid": "nobody"})
    assert r.status_code == 404 and "not found" in r.json()["detail"]
    assert_rate_headers(r)
    await client.post("/v1/users", json={"uid": "bob", "name": "Bob"})
    r = await send(client, world, params={"uid": "bob"})
    assert r.status_code == 404 and "has not installed" in r.json()["detail"]
    assert await row_counts(platform) == before


async def test_404_after_uninstall(client: httpx.AsyncClient, world: World) -> None:
    assert (await client.delete(f"/v1/users/{world.uid}/apps/{world.app_id}")).status_code == 204
    assert (await send(client, world)).status_code == 404


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"uid": None}, "uid"),
        ({"uid": ""}, "uid"),
        ({"uid": "   "}, "uid"),
        ({"message": None}, "message: required"),
        ({"message": ""}, "message: must not be empty"),
        ({"message": "  \n "}, "message: must not be empty"),
        ({"message": "x" * 2001}, "over the limit of 2000"),
        ({"message": "a\x00b"}, "NUL"),
    ],
)
async def test_422_for_bad_fields(
    client: httpx.AsyncClient,
    world: World,
    platform: Platform,
    params: dict[str, Any],
    fragment: str,
) -> None:
    before = await row_counts(platform)
    r = await send(client, world, params=params)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]
    assert_rate_headers(r)
    assert await row_counts(platform) == before


async def test_message_at_the_limit_is_accepted(client: httpx.AsyncClient, world: World) -> None:
    r = await send(client, world, message="é" * 2000)
    assert r.status_code == 200


async def test_422_for_bad_encoding(client: httpx.AsyncClient, world: World) -> None:
    r = await client.post(
        f"{url(world.app_id)}?uid={world.uid}&message=%ff%fe", headers=auth(world.app_secret)
    )
    assert r.status_code == 422
    assert "UTF-8" in r.json()["detail"]


HOSTILE = [
    "'; DROP TABLE notifications; --",
    "<script>alert('x')</script><img src=x onerror=alert(1)>",
    "\u202eevil\u202c مرحبا بالعالم",
    "{{user_facts}} {{user_name}} {% raw %}",
    "emoji 🎉 and combining é and zero-width \u200b",
    "line\nbreak\ttab\r\n",
]


@pytest.mark.parametrize("message", HOSTILE)
async def test_hostile_strings_are_stored_verbatim(
    client: httpx.AsyncClient, world: World, message: str
) -> None:
    r = await send(client, world, message=message)
    assert r.status_code == 200, r.text
    inbox = (await client.get(f"/v1/users/{world.uid}/notifications")).json()["items"]
    assert inbox[0]["body"] == message
    chat = (await client.get(f"/v1/users/{world.uid}/apps/{world.app_id}/messages")).json()
    assert chat["messages"][-1]["text"] == message


@pytest.mark.parametrize("uid", HOSTILE[:3] + ["a" * 5000])
async def test_hostile_uids_are_404_not_500(
    client: httpx.AsyncClient, world: World, uid: str
) -> None:
    r = await send(client, world, params={"uid": uid})
    assert r.status_code == 404


async def test_hostile_app_ids_are_4xx_not_500(client: httpx.AsyncClient, world: World) -> None:
    for app_id, status in [("x" * 3000, 401), ("%00", 422), ("..%2F..%2Fetc", 404)]:
        r = await client.post(
            url(app_id), params={"uid": world.uid, "message": "hi"}, headers=auth(world.app_secret)
        )
        assert r.status_code == status, r.text


async def test_429_after_the_hourly_limit_with_retry_after(
    client: httpx.AsyncClient, world: World, platform: Platform
) -> None:
    for i in range(10):
        r = await send(client, world, message=f"message {i}")
        assert r.status_code == 200
        assert r.headers["X-RateLimit-Remaining"] == str(9 - i)
    before = await row_counts(platform)
    r = await send(client, world, message="one too many")
    assert r.status_code == 429
    assert "rate limited" in r.json()["detail"]
    assert 1 <= int(r.headers["Retry-After"]) <= 3660
    assert r.headers["X-RateLimit-Remaining"] == "0"
    assert await row_counts(platform) == before


async def test_per_app_limit(client: httpx.AsyncClient) -> None:
    w = await make_world(client, MENTOR_MANIFEST, direct_limit_per_hour=2)
    assert (await send(client, w, message="a")).headers["X-RateLimit-Limit"] == "2"
    assert (await send(client, w, message="b")).status_code == 200
    assert (await send(client, w, message="c")).status_code == 429


async def test_limit_is_per_user(client: httpx.AsyncClient) -> None:
    w = await make_world(client, MENTOR_MANIFEST, direct_limit_per_hour=1)
    assert (await send(client, w, message="a")).status_code == 200
    await client.post("/v1/users", json={"uid": "bob", "name": "Bob"})
    await client.post(f"/v1/users/bob/apps/{w.app_id}", json={"scopes": []})
    r = await send(client, w, message="a", params={"uid": "bob"})
    assert r.status_code == 200


async def test_idempotency_key_returns_the_first_result(
    client: httpx.AsyncClient, world: World, platform: Platform
) -> None:
    h = {**auth(world.app_secret), "Idempotency-Key": "order-42"}
    first = await send(client, world, message="first", headers=h)
    again = await send(client, world, message="something else", headers=h)
    assert first.status_code == again.status_code == 200
    assert again.json()["notification_id"] == first.json()["notification_id"]
    assert (await row_counts(platform))[0] == 1


async def test_bad_idempotency_key(client: httpx.AsyncClient, world: World) -> None:
    r = await send(client, world, headers={**auth(world.app_secret), "Idempotency-Key": "k" * 300})
    assert r.status_code == 422 and "Idempotency-Key" in r.json()["detail"]


async def test_same_message_within_60s_is_sent_once(
    client: httpx.AsyncClient, world: World, platform: Platform
) -> None:
    a = await send(client, world, message="Standup in 5 minutes")
    b = await send(client, world, message="Standup in 5 minutes")
    assert b.status_code == 200
    assert b.json()["notification_id"] == a.json()["notification_id"]
    assert b.json().get("duplicate") is True
    assert (await row_counts(platform))[0] == 1
    # A duplicate does not use up the hourly limit.
    assert b.headers["X-RateLimit-Remaining"] == "9"
    c = await send(client, world, message="Standup in 10 minutes")
    assert c.json()["notification_id"] != a.json()["notification_id"]


async def test_duplicate_window_expires(tmp_path: Any) -> None:
    from nudge.api.app import create_app
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, dedupe_window_s=0.0)
    p = await Platform.start(settings)
    try:
        app = create_app(settings, platform=p)
        app.state.platform = p
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://t",
            headers=auth("test-admin-token"),
        ) as c:
            w = await make_world(c)
            a = await send(c, w, message="same")
            b = await send(c, w, message="same")
            assert a.json()["notification_id"] != b.json()["notification_id"]
    finally:
        await p.close()


async def test_typed_send_carries_type_and_data(client: httpx.AsyncClient, world: World) -> None:
    r = await client.post(
        "/api/notifications/send",
        json={
            "user_id": world.uid,
            "type": "trigger_event",
            "message": "Reminder: Your PR review is coming up.",
            "data": {"deep_link": "/memories/abc123"},
        },
        headers=auth(world.app_secret),
    )
    assert r.status_code == 200, r.text
    assert_rate_headers(r)
    item = (await client.get(f"/v1/users/{world.uid}/notifications")).json()["items"][0]
    assert item["type"] == "trigger_event"
    assert item["data"]["deep_link"] == "/memories/abc123"
    assert item["data"]["navigate_to"] == f"/chat/{world.app_id}"
    assert item["data"]["app_id"] == world.app_id


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"type": "x", "message": "hi"}, 422),
        ({"user_id": "user123", "message": ""}, 422),
        ({"user_id": "user123", "message": "hi", "data": {"k": 1}}, 422),
        ({"user_id": "user123", "message": "hi", "extra": 1}, 422),
        ({"user_id": "nobody", "message": "hi"}, 404),
    ],
)
async def test_typed_send_errors(
    client: httpx.AsyncClient, world: World, body: dict[str, Any], status: int
) -> None:
    r = await client.post("/api/notifications/send", json=body, headers=auth(world.app_secret))
    assert r.status_code == status, r.text
    assert isinstance(r.json()["detail"], str)
    assert_rate_headers(r)


async def test_typed_send_needs_a_secret(client: httpx.AsyncClient, world: World) -> None:
    r = await client.post(
        "/api/notifications/send",
        json={"user_id": world.uid, "message": "hi"},
        headers={"Authorization": ""},
    )
    assert r.status_code == 401


async def test_typed_send_not_json(client: httpx.AsyncClient, world: World) -> None:
    r = await client.post(
        "/api/notifications/send",
        content=b"\xff{not json",
        headers={**auth(world.app_secret), "Content-Type": "application/json"},
    )
    assert r.status_code == 422


async def test_status_endpoint_is_for_the_sending_app_only(
    client: httpx.AsyncClient, world: World
) -> None:
    nid = (await send(client, world)).json()["notification_id"]
    other = (await client.post("/v1/apps", json={"manifest": {"name": "Other"}})).json()
    r = await client.get(
        f"/v2/integrations/{other['app_id']}/notifications/{nid}", headers=auth(other["app_secret"])
    )
    assert r.status_code == 404
    r = await client.get(
        f"/v2/integrations/{world.app_id}/notifications/{nid}", headers=auth(other["app_secret"])
    )
    assert r.status_code == 401
    r = await client.get(
        f"/v2/integrations/{world.app_id}/notifications/n_missing", headers=auth(world.app_secret)
    )
    assert r.status_code == 404


async def test_other_methods_on_the_direct_path_are_405(
    client: httpx.AsyncClient, world: World, platform: Platform
) -> None:
    r = await client.get(url(world.app_id), params={"uid": world.uid, "message": "m"})
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    assert await row_counts(platform) == (0, 0, 0)


async def test_direct_route_is_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"][url("{app_id}")]["post"]
    names = {(p["in"], p["name"]) for p in operation["parameters"]}
    assert {("path", "app_id"), ("query", "uid"), ("query", "message")} <= names
    assert {"200", "401", "404", "422", "429"} <= set(operation["responses"])


async def test_database_outage_is_a_503_and_a_bug_a_logged_500(
    client: httpx.AsyncClient, world: World, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    async def lost(*_: Any) -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(platform.acceptor, "accept", lost)
    r = await send(client, world)
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert "retry" in r.json()["detail"]

    async def bug(*_: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(platform.acceptor, "accept", bug)
    # The 500 is answered, then the error re-raised for the server to log: keep the answer.
    app = create_app(platform.settings, platform=platform)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://nudge.test") as raw:
        r = await send(raw, world)
    assert r.status_code == 500 and "logged" in r.json()["detail"]
