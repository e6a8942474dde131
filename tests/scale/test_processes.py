"""Two API and two worker processes on the real PostgreSQL and Redis (contract.md §8).

Direct notifications sent to either API process are delivered exactly once, counted at the FCM
fake; the live inbox reaches an SSE client on one API process whichever process accepted the
notification and whichever worker delivered it; the hourly direct limit holds across the API
processes. Each runs with Redis carrying events and wake-ups, and with PostgreSQL LISTEN/NOTIFY
instead.
"""

from __future__ import annotations

import asyncio
import collections
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, wait_for
from tests.scale.conftest import (
    FcmProcess,
    base_env,
    make_users,
    send_direct,
    start_servers,
    stop_all,
    wait_all_delivered,
)

NOTIFICATIONS = 1000


async def listen_sse(url: str, uid: str, into: list[dict[str, Any]], ready: asyncio.Event) -> None:
    """Read the user's live inbox on ``url``; ``ready`` is set once the stream is subscribed."""
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(60, connect=5)) as c,
        c.stream("GET", f"{url}/v1/users/{uid}/notifications/stream", headers=headers) as r,
    ):
        assert r.status_code == 200
        event = None
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                if event == "ready":
                    ready.set()
            elif line.startswith("data:") and event == "notification":
                into.append(json.loads(line.split(":", 1)[1]))


async def race_limit(urls: list[str], uid: str, *, limit: int, sends: int) -> dict[int, int]:
    """An app allowed ``limit`` sends per user per hour; ``sends`` at once, spread over ``urls``."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(
            f"{urls[0]}/v1/apps",
            json={"manifest": {"name": "Limited"}, "direct_limit_per_hour": limit},
            headers=admin,
        )
        app = r.json()
        r = await c.post(
            f"{urls[0]}/v1/users/{uid}/apps/{app['app_id']}", json={"scopes": []}, headers=admin
        )
        assert r.status_code == 200, r.text

        async def send(i: int) -> int:
            r = await c.post(
                f"{urls[i % len(urls)]}/v2/integrations/{app['app_id']}/notification",
                params={"uid": uid, "message": f"limited {i}"},
                headers={"Authorization": f"Bearer {app['app_secret']}"},
            )
            return r.status_code

        codes = await asyncio.gather(*(send(i) for i in range(sends)))
    return dict(collections.Counter(codes))


@pytest.mark.parametrize("transport", ["redis", "postgres"])
async def test_two_api_two_workers_exactly_once(
    tmp_path: Path, postgres_url: str, redis_url: str, fcm_process: FcmProcess, transport: str
) -> None:
    # Workers poll only every 30 s: deliveries are prompt only if the API processes' wake-ups
    # reach them through the transport.
    env = base_env(
        postgres_url,
        redis_url if transport == "redis" else None,
        NUDGE_DELIVERY_POLL_INTERVAL_S="30",
        **fcm_process.env(),
    )
    servers = await start_servers(tmp_path, env, ["api", "api", "worker", "worker"])
    api1, api2, worker1, _ = servers
    try:
        # A worker process serves its health and metrics, not the API.
        async with httpx.AsyncClient(base_url=worker1.url, timeout=10) as c:
            assert "fcm" in (await c.get("/readyz")).json()["providers"]
            assert (await c.get("/metrics")).status_code == 200
            assert (await c.post("/v1/users", json={"name": "x"})).status_code == 404

        app_id, secret, uids = await make_users(api1.url, 50)
        watched = uids[0]
        seen: list[dict[str, Any]] = []
        ready = asyncio.Event()
        sse = asyncio.create_task(listen_sse(api1.url, watched, seen, ready))
        await asyncio.wait_for(ready.wait(), 10)

        accepted = await send_direct([api1.url, api2.url], app_id, secret, uids, NOTIFICATIONS)
        assert len(accepted) == NOTIFICATIONS
        by_api = collections.Counter(url for url, _ in accepted.values())
        assert by_api == {api1.url: NOTIFICATIONS // 2, api2.url: NOTIFICATIONS // 2}

        await wait_all_delivered(postgres_url, NOTIFICATIONS, timeout=30)
        # Anything sent twice would have reached the fake by the time the rows say delivered;
        # give stragglers a moment anyway.
        await asyncio.sleep(0.5)
        receipts = await fcm_process.receipts()
        assert set(receipts) == set(accepted), "a notification never reached FCM"
        twice = {nid: n for nid, n in receipts.items() if n != 1}
        assert not twice, f"{len(twice)} notifications reached FCM more than once"

        # The SSE client on api1 saw each notification for its user once, from both API processes.
        expected = {nid for nid, (_, uid) in accepted.items() if uid == watched}
        assert {accepted[nid][0] for nid in expected} == {api1.url, api2.url}

        async def seen_all() -> bool:
            return {e["id"] for e in seen} >= expected

        await wait_for(seen_all, timeout=10)
        counts = collections.Counter(e["id"] for e in seen)
        assert set(counts) == expected and set(counts.values()) == {1}
        sse.cancel()
        await asyncio.gather(sse, return_exceptions=True)

        # The hourly limit holds across API processes: 40 concurrent sends, 5 accepted.
        statuses = await race_limit([api1.url, api2.url], watched, limit=5, sends=40)
        assert statuses == {200: 5, 429: 35}
    finally:
        stop_all(servers)
