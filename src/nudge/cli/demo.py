"""``nudge demo``: the platform on the embedded defaults, shown end to end in one command.

This first version shows the direct path (app -> platform -> inbox). The proactive part (the mentor
example, a played conversation and the embedded LLM) is added with the developer kit.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from nudge.api.app import create_app
from nudge.config import Settings
from nudge.platform import Platform


async def run_demo(settings: Settings, echo: Any = print) -> dict[str, Any]:
    platform = await Platform.start(settings)
    app = create_app(settings, platform=platform)
    app.state.platform = platform
    headers = {"Authorization": f"Bearer {platform.admin_token}"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://nudge.local", headers=headers
        ) as c:
            echo("nudge demo: creating an app and a user")
            manifest = {"name": "Demo Reminders", "capabilities": []}
            created = (await c.post("/v1/apps", json={"manifest": manifest})).json()
            user = (await c.post("/v1/users", json={"name": "Ana", "facts": ["Runs at 7am"]})).json()
            await c.post(f"/v1/users/{user['uid']}/apps/{created['app_id']}", json={"scopes": []})
            echo("nudge demo: sending a direct notification with the app secret")
            sent = await c.post(
                f"/v2/integrations/{created['app_id']}/notification",
                params={"uid": user["uid"], "message": "Your task is due in 1 hour!"},
                headers={"Authorization": f"Bearer {created['app_secret']}"},
            )
            sent.raise_for_status()
            nid = sent.json()["notification_id"]
            for _ in range(200):
                status = (
                    await c.get(
                        f"/v2/integrations/{created['app_id']}/notifications/{nid}",
                        headers={"Authorization": f"Bearer {created['app_secret']}"},
                    )
                ).json()
                if all(d["state"] == "delivered" for d in status["deliveries"]):
                    break
                await asyncio.sleep(0.05)
            inbox = (await c.get(f"/v1/users/{user['uid']}/notifications")).json()["items"]
            result = {"direct": inbox[0], "deliveries": status["deliveries"]}
            echo("nudge demo: the user's inbox now holds:")
            echo(json.dumps({"title": inbox[0]["title"], "body": inbox[0]["body"]}, indent=2))
            return result
    finally:
        await platform.close()


def demo_settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, database_url=f"sqlite+aiosqlite:///{data_dir}/nudge.db")
