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
from pathlib import Path

import httpx
import pytest

from tests.scale.conftest import (
    FcmProcess,
    LiveInbox,
    base_env,
    limited_app,
    make_users,
    send_at_once,
    send_direct,
    start_servers,
    stop_all,
    wait_all_delivered,
)

NOTIFICATIONS = 1000


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
        inbox = await LiveInbox.open(api1.url, watched)

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
        counts = await inbox.close_once_seen(expected)
        assert set(counts) == expected and set(counts.values()) == {1}

        # The hourly limit holds across API processes: 40 concurrent sends, 5 accepted.
        app_id, secret = await limited_app(api1.url, ["limited"], 5)
        messages = [f"limited {i}" for i in range(40)]
        answers = await send_at_once([api1.url, api2.url], app_id, secret, "limited", messages)
        assert collections.Counter(r.status_code for r in answers) == {200: 5, 429: 35}
    finally:
        stop_all(servers)
