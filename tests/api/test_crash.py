"""kill -9 while direct notifications are being accepted: every 200 survives, exactly once."""

from __future__ import annotations

import asyncio
import collections
import sqlite3
from pathlib import Path

import httpx

from tests.conftest import ADMIN, MENTOR_MANIFEST, start_server


async def _load(
    url: str, app_id: str, secret: str, accepted: list[str], stop: asyncio.Event
) -> None:
    async def client(n: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=5) as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = await c.post(
                        f"/v2/integrations/{app_id}/notification",
                        params={"uid": "user123", "message": f"client {n} message {i}"},
                        headers={"Authorization": f"Bearer {secret}"},
                    )
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    accepted.append(r.json()["notification_id"])

    await asyncio.gather(*(client(n) for n in range(16)))


async def test_kill_9_loses_no_accepted_notification(tmp_path: Path) -> None:
    # A short delivery lease, so that claims held by the killed worker come due again quickly.
    lease = {"NUDGE_DELIVERY_LEASE_S": "3"}
    server = start_server(tmp_path, lease)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=server.url, headers=admin) as c:
        app = c.post(
            "/v1/apps", json={"manifest": MENTOR_MANIFEST, "direct_limit_per_hour": 1_000_000}
        ).json()
        c.post("/v1/users", json={"uid": "user123", "name": "Ana"}).raise_for_status()
        c.post(f"/v1/users/user123/apps/{app['app_id']}", json={"scopes": []}).raise_for_status()

    accepted: list[str] = []
    stop = asyncio.Event()
    load = asyncio.create_task(_load(server.url, app["app_id"], app["app_secret"], accepted, stop))
    while len(accepted) < 300:
        await asyncio.sleep(0.05)
        assert not load.done(), "the load stopped before the kill"
    server.kill()  # SIGKILL, mid-load
    stop.set()
    await load
    assert len(accepted) >= 300

    restarted = start_server(tmp_path, lease, port=int(server.url.rsplit(":", 1)[1]))
    try:
        async with httpx.AsyncClient(base_url=restarted.url, headers=admin, timeout=10) as c:
            seen: list[str] = []
            cursor = None
            while True:
                params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
                page = (await c.get("/v1/users/user123/notifications", params=params)).json()
                seen += [n["id"] for n in page["items"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            counts = collections.Counter(seen)
            assert all(v == 1 for v in counts.values()), "a notification is in the inbox twice"
            missing = set(accepted) - set(counts)
            assert not missing, f"{len(missing)} accepted notifications were lost"

        # And the restarted worker finishes every inbox delivery, including those whose claim
        # died with the killed process.
        def undelivered() -> int:
            with sqlite3.connect(tmp_path / "nudge.db") as db:
                return int(
                    db.execute(
                        "SELECT count(*) FROM deliveries WHERE state != 'delivered'"
                    ).fetchone()[0]
                )

        for _ in range(200):
            if undelivered() == 0:
                break
            await asyncio.sleep(0.1)
        assert undelivered() == 0
    finally:
        restarted.stop()
