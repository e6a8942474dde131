"""Shared steps of the integration-API tests: an importing app's manifest, and importing."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import World


def importer(actions: list[str], name: str = "Journal") -> dict[str, Any]:
    """An import-only app (no webhook) with these integration actions."""
    return {
        "name": name,
        "capabilities": ["external_integration"],
        "external_integration": {"actions": [{"action": a} for a in actions]},
    }


IMPORTER = importer(["create_conversation", "create_memories"])


async def import_for(
    client: httpx.AsyncClient,
    world: World,
    memories: list[dict[str, Any]],
    conversation: dict[str, Any],
) -> dict[str, Any]:
    """Import memories and one conversation as ``world``'s app; the conversation stored."""
    secret = {"Authorization": f"Bearer {world.app_secret}"}
    base = f"/v2/integrations/{world.app_id}/user"
    r = await client.post(
        f"{base}/memories", params={"uid": world.uid}, headers=secret, json={"memories": memories}
    )
    assert r.status_code == 200, r.text
    r = await client.post(
        f"{base}/conversations", params={"uid": world.uid}, headers=secret, json=conversation
    )
    assert r.status_code == 200, r.text
    stored: dict[str, Any] = r.json()["conversation"]
    return stored
