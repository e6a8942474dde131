"""``nudge users facts`` and ``nudge users conversations``: what apps imported, from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from nudge.platform import Platform
from tests.api.integration_helpers import IMPORTER, import_for
from tests.conftest import make_settings, make_world
from tests.proactive.helpers import api_client


async def test_facts_and_conversations_of_a_user(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    platform = await Platform.start(settings)
    try:
        async with api_client(platform) as client:
            world = await make_world(client, IMPORTER, scopes=[])
            await import_for(
                client,
                world,
                [{"content": "Ana journals daily", "tags": ["habit"]}],
                {"transcript_segments": [{"text": "Morning pages done"}, {"text": "Then a run"}]},
            )
    finally:
        await platform.close()

    facts = json.loads(run("users", "facts", world.uid).stdout)
    assert [(f["content"], f.get("app_id"), f["tags"]) for f in facts] == [
        ("Ana journals daily", world.app_id, ["habit"]),
        ("Wants to run a marathon", None, []),
    ]
    (conversation,) = json.loads(run("users", "conversations", world.uid).stdout)
    assert conversation["source"] == "external_integration"
    assert conversation["app_id"] == world.app_id and conversation["transcript_segments"] == []
    (shown,) = json.loads(run("users", "conversations", world.uid, "--segments", "1").stdout)
    assert [s["text"] for s in shown["transcript_segments"]] == ["Morning pages done"]
    assert "not found" in run("users", "facts", "nobody", ok=False).stderr
    assert "not found" in run("users", "conversations", "nobody", ok=False).stderr
