"""The mentor example as a real process behind a real ``nudge serve``: segments posted to the
platform reach the mentor, its prompt comes back, and the user gets one proactive notification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN, free_port, make_world, start_server, wait_for
from tests.examples.conftest import run_example


def segment(text: str, i: int) -> dict[str, Any]:
    return {
        "text": text,
        "speaker": f"SPEAKER_0{i % 2}",
        "speaker_id": i % 2,
        "is_user": i % 2 == 0,
        "start": float(i),
        "end": i + 0.9,
    }


async def test_mentor_sends_one_proactive_notification(tmp_path: Path) -> None:
    mentor_port = free_port()
    manifest = {
        "name": "Mentor",
        "description": "Real-time mentoring advice",
        "capabilities": ["external_integration", "proactive_notification"],
        "external_integration": {
            "triggers_on": "transcript_processed",
            "webhook_url": f"http://127.0.0.1:{mentor_port}/webhook",
        },
        "proactive_notification": {"scopes": ["user_name", "user_facts", "user_context"]},
    }
    server = start_server(tmp_path)  # NUDGE_LLM_PROVIDER=fake, NUDGE_ALLOW_PRIVATE_WEBHOOKS=1
    try:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
        ) as admin:
            world = await make_world(
                admin, manifest, scopes=["user_name", "user_facts", "user_context"]
            )
            env = {"NUDGE_WEBHOOK_SECRET": world.webhook_secret}
            with run_example("examples.mentor.app", env, tmp_path / "mentor.log", mentor_port):
                said = [
                    "I am thinking of training for a marathon this spring.",
                    "What do you think?",
                ]
                r = await admin.post(
                    f"/v1/users/{world.uid}/sessions/s1/segments",
                    json={"segments": [segment(t, i) for i, t in enumerate(said)]},
                )
                assert r.status_code == 202, r.text

                async def proactive() -> list[dict[str, Any]]:
                    got = await admin.get(f"/v1/users/{world.uid}/notifications")
                    return [n for n in got.json()["items"] if n["kind"] == "proactive"]

                items = await wait_for(proactive, timeout=30)
                # More talk in the same session: the old "what do you think" does not count again.
                r = await admin.post(
                    f"/v1/users/{world.uid}/sessions/s1/segments",
                    json={"segments": [segment("Okay, thanks. Let's get lunch.", 2)]},
                )
                assert r.status_code == 202, r.text

                async def two_traces() -> list[dict[str, Any]] | None:
                    got = await admin.get(f"/v1/apps/{world.app_id}/traces")
                    found: list[dict[str, Any]] = got.json()["items"]
                    return found if len(found) >= 2 else None

                traces = await wait_for(two_traces, timeout=30)
                mentor_log = (tmp_path / "mentor.log").read_text()
            assert [t["outcome"] for t in traces] == ["no_action", "notified"]  # newest first
            assert len(await proactive()) == 1
            notified = [t for t in traces if t["outcome"] == "notified"]
        assert len(items) == 1, items
        note = items[0]
        assert note["app_id"] == world.app_id and note["title"] == "Mentor says"
        assert len(note["body"]) >= 5
        assert note["data"]["navigate_to"] == f"/chat/{world.app_id}"
        assert "transcript handled" in mentor_log
        # The platform filled the mentor's template with this user's granted context.
        assert len(notified) == 1 and notified[0]["notification_id"] == note["id"]
        trace = notified[0]
        assert '"params":["user_name","user_facts","user_context"]' in trace["response"]["body"]
        filled = trace["prompt"]["filled"]
        assert filled.startswith("You are a helpful mentor for Ana.")
        assert "(Wants to run a marathon)" in filled and "What do you think?" in filled
    finally:
        server.stop()
