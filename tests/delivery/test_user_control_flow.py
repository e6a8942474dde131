"""Issue 17 end to end: the API accepts with a priority, a ttl or the user's digest, the worker
sends through the real providers, and the push-service fakes see the fields and the summary."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import World, wait_for
from tests.delivery.conftest import vapid_public
from tests.delivery.test_delivery_flow import APNS_TOKEN, add_device, status
from tests.fakes.apns import FakeApns
from tests.fakes.fcm import FakeFcm
from tests.fakes.webpush import FakePushService

DIGEST_S = 4
FINAL = ("delivered", "merged", "expired", "failed", "token-removed")


async def notify(
    client: httpx.AsyncClient, world: World, message: str, **params: Any
) -> dict[str, Any]:
    r = await client.post(
        f"/v2/integrations/{world.app_id}/notification",
        params={"uid": world.uid, "message": message, **params},
        headers={"Authorization": f"Bearer {world.app_secret}"},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def settled(client: httpx.AsyncClient, world: World, nid: str, provider: str) -> Any:
    """The delivery through ``provider`` once it has a final state (merged and expired too)."""

    async def final() -> dict[str, Any] | None:
        body = await status(client, world, nid)
        [d] = [d for d in body["deliveries"] if d["provider"] == provider]
        return d if d["state"] in FINAL else None

    return await wait_for(final, timeout=20)


async def test_a_low_priority_notification_with_a_ttl_reaches_each_service_so(
    client: httpx.AsyncClient,
    world: World,
    fcm: FakeFcm,
    apns: FakeApns,
    push_service: FakePushService,
    vapid_key: ec.EllipticCurvePrivateKey,
) -> None:
    sub = push_service.subscribe(vapid_public(vapid_key))
    await add_device(client, world.uid, platform="fcm", token="fcm-token-1")
    await add_device(client, world.uid, platform="apns", token=APNS_TOKEN)
    await add_device(client, world.uid, platform="webpush", subscription=sub.info())
    before = time.time()

    nid = (await notify(client, world, "No rush", priority="low", ttl=600))["notification_id"]
    for provider in ("fcm", "apns", "webpush"):
        assert (await settled(client, world, nid, provider))["state"] == "delivered"

    android = fcm.calls[0].message["android"]
    assert android["priority"] == "normal" and 590 <= int(android["ttl"][:-1]) <= 600
    headers = apns.calls[0].headers
    assert headers["apns-priority"] == "5"
    assert before + 600 - 1 <= int(headers["apns-expiration"]) <= time.time() + 600
    aps = apns.calls[0].payload["aps"]
    assert aps["interruption-level"] == "passive" and aps["badge"] == 1  # it is unread
    assert push_service.calls[0].headers["urgency"] == "low"
    assert 590 <= int(push_service.calls[0].headers["ttl"]) <= 600


async def test_a_digest_window_sends_one_summary_push_and_the_inbox_gets_each(
    client: httpx.AsyncClient, world: World, fcm: FakeFcm
) -> None:
    await add_device(client, world.uid, platform="fcm", token="fcm-token-1")
    r = await client.put(
        f"/v1/users/{world.uid}/preferences", json={"apps": {world.app_id: {"digest_s": DIGEST_S}}}
    )
    assert r.status_code == 200, r.text
    # Digest windows end at multiples of DIGEST_S: send early in one, so all three fall in it.
    while time.time() % DIGEST_S > 1.0:
        await asyncio.sleep(0.05)
    ids = [(await notify(client, world, text))["notification_id"] for text in ("one", "two", "3")]

    pushes = [await settled(client, world, nid, "fcm") for nid in ids]

    assert [d["state"] for d in pushes] == ["merged", "merged", "delivered"]
    [call] = fcm.calls
    assert call.message["notification"]["body"] == "3"
    assert call.message["notification"]["title"].endswith("(3)")
    assert call.message["data"]["summary_of"] == "3"
    assert all(pushes[2]["id"] in d["last_error"] for d in pushes[:2])  # names the carrier
    for nid in ids:  # the inbox was not held: each went there on its own
        assert (await settled(client, world, nid, "inbox"))["state"] == "delivered"
