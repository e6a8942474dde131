"""The direct path end to end in-process: accept, deliver to the inbox, read back."""

from __future__ import annotations

import httpx

from tests.conftest import World, wait_for


async def test_direct_notification_reaches_inbox(client: httpx.AsyncClient, world: World) -> None:
    r = await client.post(
        f"/v2/integrations/{world.app_id}/notification",
        params={"uid": world.uid, "message": "Your task is due in 1 hour!"},
        headers={"Authorization": f"Bearer {world.app_secret}"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok" and body["devices"] == 0
    assert r.headers["X-RateLimit-Limit"] == "10"
    assert r.headers["X-RateLimit-Remaining"] == "9"

    async def delivered() -> bool:
        s = await client.get(
            f"/v2/integrations/{world.app_id}/notifications/{body['notification_id']}",
            headers={"Authorization": f"Bearer {world.app_secret}"},
        )
        return s.json()["deliveries"][0]["state"] == "delivered"

    await wait_for(delivered)
    inbox = (await client.get(f"/v1/users/{world.uid}/notifications")).json()["items"]
    assert [n["body"] for n in inbox] == ["Your task is due in 1 hour!"]
    assert inbox[0]["title"] == "Mentor says"
