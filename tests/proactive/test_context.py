"""Context for the four scopes, with full-text retrieval of past conversations on SQLite (FTS5)
and PostgreSQL (tsvector)."""

from __future__ import annotations

from pathlib import Path

import httpx

from nudge.platform import Platform
from nudge.proactive.context import build_context, keywords, related_conversations
from tests.conftest import make_settings
from tests.proactive.helpers import api_client, create_user, post_segments

PAST = {
    "p-garden": "We planted tomatoes and basil in the garden. The tomatoes need daily watering.",
    "p-tax": "The accountant wants the tax receipts before April.",
    "p-trip": "Booked the train to Lisbon; the hotel is near the river.",
}


async def _history(c: httpx.AsyncClient) -> None:
    await create_user(c, "ana", "Ana", ["Allergic to peanuts", "Runs on {{user_name}} days"])
    await create_user(c, "bo", "Bo")
    for session, text in PAST.items():
        await post_segments(c, "ana", session, text)
        r = await c.post(f"/v1/users/ana/sessions/{session}/finish")
        assert r.status_code == 200, r.text
    # Another user's conversation about tomatoes must never be retrieved for Ana.
    await post_segments(c, "bo", "b-garden", "Bo grows tomatoes tomatoes tomatoes.")
    await c.post("/v1/users/bo/sessions/b-garden/finish")


async def test_retrieval_and_scopes(tmp_path: Path, database_url: str) -> None:
    platform = await Platform.start(make_settings(tmp_path, database_url=database_url))
    try:
        async with api_client(platform) as c:
            await _history(c)
            await post_segments(
                c, "ana", "live", "The tomatoes look dry again.", "Should I water the tomatoes?"
            )
            found = await platform.db.run_in_transaction(
                lambda conn: related_conversations(conn, "ana", "live", ["tomatoes", "water"])
            )
            assert [r["id"] for r in found] == ["p-garden"]
            assert "tomatoes" in found[0]["snippet"].lower()
            none = await platform.db.run_in_transaction(
                lambda conn: [
                    related_conversations(conn, "ana", "live", ["zebra"]),
                    # The live session itself is never "related".
                    related_conversations(conn, "ana", "p-garden", ["tomatoes"]),
                ]
            )
            assert none == [[], []]
            values, notes = await platform.db.run_in_transaction(
                lambda conn: build_context(
                    conn,
                    uid="ana",
                    app_id="app_none",
                    session_id="live",
                    scopes=["user_name", "user_facts", "user_context", "user_chat"],
                )
            )
            assert values["user_name"] == "Ana"
            assert values["user_facts"] == "Allergic to peanuts; Runs on {{user_name}} days"
            context = values["user_context"]
            assert context.startswith("Current conversation:\nSPEAKER_01: The tomatoes look dry")
            assert "Related past conversations:" in context and "planted tomatoes" in context
            assert "Bo grows" not in context and "Lisbon" not in context
            assert notes == {"related_conversations": ["p-garden"]}
            assert values["user_chat"] == ""
    finally:
        await platform.close()


def test_keywords_prefer_frequent_content_words() -> None:
    words = keywords("What do you think about the launch? The launch date moved, the budget too.")
    assert words[0] == "launch" and "the" not in words and "think" not in words
    assert "budget" in words and "date" in words
