"""Context for the four scopes. ``{{user_context}}`` is the user's past conversations relevant to
the live one, as Omi fills it (not the live transcript), found by full-text search on SQLite
(FTS5) and PostgreSQL (tsvector) and steered by the answer's ``notification.context``."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from nudge.platform import Platform
from nudge.proactive.context import (
    Steering,
    build_context,
    keywords,
    parse_steering,
    related_conversations,
    user_context,
)
from nudge.store.models import Conversation
from tests.conftest import make_settings
from tests.proactive.helpers import api_client, create_user, post_segments

PAST = {
    "p-garden": "We planted tomatoes and basil in the garden. The tomatoes need daily watering.",
    "p-tax": "The accountant Maria wants the tax receipts before April.",
    "p-trip": "Booked the train to Lisbon with Maria; the hotel is near the river.",
}
DAYS = {"p-garden": "2026-03-01", "p-tax": "2026-03-02", "p-trip": "2026-03-03"}


async def _history(c: httpx.AsyncClient, platform: Platform) -> dict[str, str]:
    """Ana's three past conversations (each started on its own day); their ids by session."""
    await create_user(c, "ana", "Ana", ["Allergic to peanuts", "Runs on {{user_name}} days"])
    await create_user(c, "bo", "Bo")
    ids = {}
    for session, text in PAST.items():
        ids[session] = (await post_segments(c, "ana", session, text))["conversation_id"]
        r = await c.post(f"/v1/users/ana/sessions/{session}/finish")
        assert r.status_code == 200, r.text
        started = datetime.fromisoformat(DAYS[session]).replace(hour=9, tzinfo=UTC).timestamp()
        await platform.db.write(
            lambda conn, cid=ids[session], at=started: conn.execute(
                update(Conversation)
                .where(Conversation.id == cid)
                .values(started_at=at, created_at=at)
            )
        )
    # Another user's conversation about tomatoes must never be retrieved for Ana.
    await post_segments(c, "bo", "b-garden", "Bo grows tomatoes tomatoes tomatoes.")
    await c.post("/v1/users/bo/sessions/b-garden/finish")
    return ids


async def test_retrieval_and_scopes(tmp_path: Path, database_url: str) -> None:
    platform = await Platform.start(make_settings(tmp_path, database_url=database_url))
    try:
        async with api_client(platform) as c:
            ids = await _history(c, platform)
            live = await post_segments(
                c, "ana", "live", "The tomatoes look dry again.", "Should I water the tomatoes?"
            )
            cid = live["conversation_id"]

            def run(work: Any) -> Any:
                return platform.db.query(work)

            found = await run(
                lambda conn: related_conversations(conn, "ana", cid, ["tomatoes", "water"])
            )
            assert [r["id"] for r in found] == [ids["p-garden"]]
            assert "tomatoes" in found[0]["snippet"].lower()
            none = await run(
                lambda conn: [
                    related_conversations(conn, "ana", cid, ["zebra"]),
                    # The conversation asked about is never "related" to itself.
                    related_conversations(conn, "ana", ids["p-garden"], ["tomatoes"]),
                ]
            )
            assert none == [[], []]
            values, notes = await run(
                lambda conn: build_context(
                    conn,
                    uid="ana",
                    app_id="app_none",
                    conversation_id=cid,
                    scopes=["user_name", "user_facts", "user_context", "user_chat"],
                )
            )
            assert values["user_name"] == "Ana"
            assert values["user_facts"] == "Allergic to peanuts; Runs on {{user_name}} days"
            context = values["user_context"]
            # Past conversations, as Omi writes them; not the live transcript.
            assert context.startswith("Conversation #1\n01 Mar 2026 at 09:00 UTC (Other)\n")
            assert "planted tomatoes" in context and "look dry" not in context
            assert "Bo grows" not in context and "Lisbon" not in context
            assert notes["user_context"]["conversations"] == [ids["p-garden"]]
            assert notes["user_context"]["words_from"] == "live conversation"
            assert values["user_chat"] == ""

            async def steered(steering: Steering) -> tuple[str, dict[str, Any]]:
                result: tuple[str, dict[str, Any]] = await run(
                    lambda conn: user_context(conn, "ana", cid, steering)
                )
                return result

            # The question replaces the live words; filters narrow (any of people/topics/...).
            text, notes = await steered(Steering(question="When is the tax deadline?"))
            assert notes["conversations"] == [ids["p-tax"]] and "receipts" in text
            text, notes = await steered(Steering(people=("Maria",)))
            assert set(notes["conversations"]) == {ids["p-tax"], ids["p-trip"]}
            text, notes = await steered(Steering(question="train hotel", people=("Maria",)))
            assert notes["conversations"][0] == ids["p-trip"]  # both mention Maria; ranked
            text, notes = await steered(Steering(people=("Maria",), dates=(date(2026, 3, 3),)))
            assert notes["conversations"] == [ids["p-trip"]]
            text, notes = await steered(Steering(entities=("Zanzibar",)))
            assert text == "" and notes["conversations"] == []  # a filter matching nothing
            # Nothing matches and no filter: the most recent ones, as Omi always has some.
            text, notes = await steered(Steering(question="zebra crossings"))
            assert notes["found_by"] == "most recent"
            assert notes["conversations"] == [ids["p-trip"], ids["p-tax"], ids["p-garden"]]
    finally:
        await platform.close()


def test_parse_steering() -> None:
    steering = parse_steering(
        {
            "question": "  What did Maria say?  ",
            "filters": {
                "people": ["Maria", "Maria", ""],
                "topics": ["taxes"],
                "entities": [],
                "dates": ["2026-03-02", "2026-03-03T10:00:00Z", "last week"],
            },
        }
    )
    assert steering == Steering(
        question="What did Maria say?",
        people=("Maria",),
        topics=("taxes",),
        dates=(date(2026, 3, 2), date(2026, 3, 3)),
        ignored_dates=("last week",),
    )
    assert steering.required == ("Maria", "taxes")
    assert parse_steering(None) is None
    assert parse_steering({}) == Steering()


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("who", "notification.context: must be an object"),
        ({"question": 5}, "notification.context.question: must be a string"),
        ({"filters": ["Maria"]}, "notification.context.filters: must be an object"),
        ({"filters": {"people": "Maria"}}, "notification.context.filters.people: must be a list"),
        ({"filters": {"dates": [20260301]}}, "notification.context.filters.dates: must be a list"),
    ],
)
def test_bad_steering_names_the_field(value: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_steering(value)


def test_keywords_prefer_frequent_content_words() -> None:
    words = keywords("What do you think about the launch? The launch date moved, the budget too.")
    assert words[0] == "launch" and "the" not in words and "think" not in words
    assert "budget" in words and "date" in words
