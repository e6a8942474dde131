"""The mentor example as a real process behind a real ``nudge serve``: segments posted to the
platform reach the mentor, its prompt comes back, and the user gets one proactive notification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import wait_for
from tests.examples.conftest import behind_platform, post_segments

MANIFEST = {
    "name": "Mentor",
    "description": "Real-time mentoring advice",
    "capabilities": ["external_integration", "proactive_notification"],
    "proactive_notification": {"scopes": ["user_name", "user_facts", "user_context"]},
}


async def test_mentor_sends_one_proactive_notification(tmp_path: Path) -> None:
    scopes = ["user_name", "user_facts", "user_context"]
    async with behind_platform(tmp_path, "examples.mentor.app", MANIFEST, scopes) as (admin, world):
        await post_segments(
            admin,
            world.uid,
            "s1",
            "I am thinking of training for a marathon this spring.",
            "What do you think?",
        )

        async def proactive() -> list[dict[str, Any]]:
            got = await admin.get(f"/v1/users/{world.uid}/notifications")
            return [n for n in got.json()["items"] if n["kind"] == "proactive"]

        items = await wait_for(proactive, timeout=30)
        # More talk in the same session: the old "what do you think" does not count again.
        await post_segments(admin, world.uid, "s1", "Okay, thanks. Let's get lunch.", first=2)

        async def two_traces() -> list[dict[str, Any]] | None:
            got = await admin.get(f"/v1/apps/{world.app_id}/traces")
            found: list[dict[str, Any]] = got.json()["items"]
            return found if len(found) >= 2 else None

        traces = await wait_for(two_traces, timeout=30)
        assert [t["outcome"] for t in traces] == ["no_action", "notified"]  # newest first
        assert len(await proactive()) == 1
    mentor_log = (tmp_path / "examples.mentor.app.log").read_text()

    assert len(items) == 1, items
    note = items[0]
    assert note["app_id"] == world.app_id and note["title"] == "Mentor says"
    assert len(note["body"]) >= 5
    assert note["data"]["navigate_to"] == f"/chat/{world.app_id}"
    assert "transcript handled" in mentor_log
    # The platform filled the mentor's template with this user's granted context.
    trace = traces[1]
    assert trace["notification_id"] == note["id"]
    assert '"params":["user_name","user_facts","user_context"]' in trace["response"]["body"]
    filled = trace["prompt"]["filled"]
    assert filled.startswith("You are a helpful mentor for Ana.")
    assert "(Wants to run a marathon)" in filled and "What do you think?" in filled
