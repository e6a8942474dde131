"""Delivery end to end: the API accepts, the worker sends through the real providers to the
local fakes, and the status endpoint, the device list and /metrics show what happened."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from nudge.config import Settings
from tests.conftest import World, make_world, running, wait_for
from tests.delivery.conftest import vapid_public
from tests.fakes.apns import FakeApns
from tests.fakes.asgi import Reply
from tests.fakes.fcm import FakeFcm, fcm_error
from tests.fakes.webpush import FakePushService

APNS_TOKEN = "b2" * 32


async def add_device(client: httpx.AsyncClient, uid: str, **device: Any) -> str:
    r = await client.post(f"/v1/users/{uid}/devices", json=device)
    assert r.status_code in (200, 201), r.text
    return str(r.json()["id"])


async def notify(client: httpx.AsyncClient, world: World, message: str) -> dict[str, Any]:
    r = await client.post(
        f"/v2/integrations/{world.app_id}/notification",
        params={"uid": world.uid, "message": message},
        headers={"Authorization": f"Bearer {world.app_secret}"},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def status(client: httpx.AsyncClient, world: World, nid: str) -> dict[str, Any]:
    r = await client.get(
        f"/v2/integrations/{world.app_id}/notifications/{nid}",
        headers={"Authorization": f"Bearer {world.app_secret}"},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def all_delivered(client: httpx.AsyncClient, world: World, nid: str) -> bool:
    return all(d["state"] == "delivered" for d in (await status(client, world, nid))["deliveries"])


async def settled(client: httpx.AsyncClient, world: World, nid: str, provider: str) -> Any:
    """Wait until the delivery through ``provider`` has a final state; returns it."""

    async def final() -> dict[str, Any] | None:
        body = await status(client, world, nid)
        [d] = [d for d in body["deliveries"] if d["provider"] == provider]
        return d if d["state"] in ("delivered", "failed", "token-removed") else None

    return await wait_for(final, timeout=15)


async def test_one_notification_reaches_fcm_apns_and_web_push(
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

    sent = await notify(client, world, "Your task is due in 1 hour!")
    assert sent["devices"] == 3
    nid = sent["notification_id"]
    for provider in ("fcm", "apns", "webpush", "inbox"):
        assert (await settled(client, world, nid, provider))["state"] == "delivered"

    assert fcm.calls[0].message["notification"]["body"] == "Your task is due in 1 hour!"
    assert fcm.calls[0].message["data"]["notification_id"] == nid
    assert apns.calls[0].payload["aps"]["alert"]["body"] == "Your task is due in 1 hour!"
    assert push_service.calls[0].payload["body"] == "Your task is due in 1 hour!"
    metrics = (await client.get("/metrics")).text
    for provider in ("fcm", "apns", "webpush", "inbox"):
        assert f'nudge_deliveries_total{{outcome="delivered",provider="{provider}"}} 1.0' in metrics


async def test_a_dead_token_is_removed_after_one_send(
    client: httpx.AsyncClient, world: World, fcm: FakeFcm, apns: FakeApns
) -> None:
    fcm.script.always("dead-token", fcm_error("UNREGISTERED"))
    dead = await add_device(client, world.uid, platform="fcm", token="dead-token")
    alive = await add_device(client, world.uid, platform="apns", token=APNS_TOKEN)

    nid = (await notify(client, world, "First"))["notification_id"]
    removed = await settled(client, world, nid, "fcm")
    assert removed["state"] == "token-removed" and "UNREGISTERED" in removed["last_error"]
    assert removed["attempts"] == 1
    devices = (await client.get(f"/v1/users/{world.uid}/devices")).json()
    assert [d["id"] for d in devices] == [alive]
    assert dead not in [d["id"] for d in devices]

    second = await notify(client, world, "Second")
    assert second["devices"] == 1
    await settled(client, world, second["notification_id"], "apns")
    assert [c.token for c in fcm.calls] == ["dead-token"]  # exactly one send to the dead token


async def test_a_credential_error_removes_nothing_and_delivers_once_fixed(
    client: httpx.AsyncClient, world: World, fcm: FakeFcm
) -> None:
    fcm.refuse_tokens = True  # e.g. the service account's key was revoked
    devices = [
        await add_device(client, world.uid, platform="fcm", token=f"fcm-token-{i}")
        for i in range(3)
    ]
    nid = (await notify(client, world, "Hello"))["notification_id"]

    async def alerted() -> list[dict[str, Any]] | None:
        ds = [d for d in (await status(client, world, nid))["deliveries"] if d["provider"] == "fcm"]
        return ds if all("invalid_grant" in d["last_error"] for d in ds) else None

    for d in await wait_for(alerted):
        assert d["state"] in ("retrying", "queued")
    listed = (await client.get(f"/v1/users/{world.uid}/devices")).json()
    assert sorted(d["id"] for d in listed) == sorted(devices)
    assert 'outcome="provider-alert",provider="fcm"' in (await client.get("/metrics")).text

    fcm.refuse_tokens = False  # the operator fixed the credentials

    # Each goes at its next attempt. Attempts keep backing off until then (the provider also
    # answers with the failed token request for a few seconds), more of them on a loaded
    # machine: fail only when one is 10 s past its due time and still not delivered.
    cap = time.time() + 120
    while not await all_delivered(client, world, nid):
        ds = (await status(client, world, nid))["deliveries"]
        overdue = [d for d in ds if (d["next_attempt_at"] or time.time()) < time.time() - 10]
        assert not overdue and time.time() < cap, ds
        await asyncio.sleep(0.05)
    assert sorted(c.token for c in fcm.calls) == [f"fcm-token-{i}" for i in range(3)]


async def test_a_429_with_retry_after_is_retried_no_sooner_than_asked(
    client: httpx.AsyncClient, world: World, fcm: FakeFcm
) -> None:
    fcm.script.queue("fcm-token-1", fcm_error("QUOTA_EXCEEDED", retry_after="2"))
    await add_device(client, world.uid, platform="fcm", token="fcm-token-1")
    nid = (await notify(client, world, "Hello"))["notification_id"]

    delivery = await settled(client, world, nid, "fcm")
    assert delivery["state"] == "delivered" and delivery["attempts"] == 2
    first, second = fcm.calls
    assert second.at - first.at >= 2.0


async def test_a_slow_provider_call_holds_up_only_its_own_delivery(
    client: httpx.AsyncClient, world: World, fcm: FakeFcm
) -> None:
    fcm.script.queue("slow-token", Reply(200, {"name": "projects/p/messages/1"}, delay_s=3.0))
    await add_device(client, world.uid, platform="fcm", token="slow-token")
    await add_device(client, world.uid, platform="fcm", token="fast-token")
    nid = (await notify(client, world, "Hello"))["notification_id"]

    async def fast_recorded() -> list[str] | None:
        states = [d["state"] for d in (await status(client, world, nid))["deliveries"]]
        return states if states.count("delivered") == 2 else None  # the inbox and the fast one

    states = await wait_for(fast_recorded, timeout=2.5)
    assert "queued" in states  # the slow one is still in flight ("sending" shows as queued)

    await wait_for(lambda: all_delivered(client, world, nid))


async def test_a_message_that_keeps_failing_ends_as_failed(
    settings: Settings, fcm: FakeFcm
) -> None:
    fcm.script.always("fcm-token-1", fcm_error("UNAVAILABLE"))
    short = settings.model_copy(update={"delivery_max_age_s": 1.0})
    async with running(short) as (_, client):
        world = await make_world(client)
        await add_device(client, world.uid, platform="fcm", token="fcm-token-1")
        nid = (await notify(client, world, "Hello"))["notification_id"]
        delivery = await settled(client, world, nid, "fcm")
    assert delivery["state"] == "failed"
    assert delivery["attempts"] >= 2 and delivery["attempts"] == len(fcm.calls)
    assert delivery["last_error"].startswith(f"gave up after {delivery['attempts']} attempts")
    assert "UNAVAILABLE" in delivery["last_error"]
    assert len(fcm.calls) >= 2


async def test_an_unconfigured_provider_fails_its_deliveries_with_the_reason(
    settings: Settings,
) -> None:
    off = settings.model_copy(update={"fcm_credentials_file": None})
    async with running(off) as (_, client):
        world = await make_world(client)
        await add_device(client, world.uid, platform="fcm", token="fcm-token-1")
        nid = (await notify(client, world, "Hello"))["notification_id"]
        delivery = await settled(client, world, nid, "fcm")
    assert delivery["state"] == "failed"
    assert "NUDGE_FCM_CREDENTIALS_FILE" in delivery["last_error"]


async def test_two_workers_send_each_delivery_exactly_once(
    settings: Settings, database_url: str, fcm: FakeFcm
) -> None:
    shared = settings.model_copy(
        update={
            "database_url": database_url,
            "direct_limit_per_hour": 1000,
            "delivery_concurrency": 8,
        }
    )
    count = 150
    api = shared.model_copy(update={"role": "api"})
    w1, w2 = (shared.model_copy(update={"role": "worker", "worker_id": w}) for w in ("w1", "w2"))
    # Both workers poll the same queue while the API process accepts.
    async with running(api) as (_, client), running(w1) as (p1, _), running(w2) as (p2, _):
        world = await make_world(client)
        for i in range(3):
            await add_device(client, world.uid, platform="fcm", token=f"fcm-token-{i}")
        nids = [
            (await notify(client, world, f"Message {i}"))["notification_id"] for i in range(count)
        ]

        async def recorded() -> bool:
            states = [
                d["state"] for nid in nids for d in (await status(client, world, nid))["deliveries"]
            ]
            return states == ["delivered"] * 4 * count  # the inbox and three devices each

        await wait_for(recorded, timeout=60, interval=0.5)
        sample = {"provider": "fcm", "outcome": "delivered"}
        per_worker = [
            p.metrics.registry.get_sample_value("nudge_deliveries_total", sample) or 0
            for p in (p1, p2)
        ]
    assert all(n > 0 for n in per_worker) and sum(per_worker) == 3 * count
    sent = [(c.message["data"]["notification_id"], c.token) for c in fcm.calls]
    assert len(sent) == len(set(sent)) == 3 * count
    assert {nid for nid, _ in sent} == set(nids)
