"""The seed docs' complete FastAPI webhook example, byte for byte, running as an app.

A conversation containing "what do you think" must produce exactly one proactive notification,
generated from a prompt filled with the granted scopes only; a second trigger within 30 s none.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from nudge.config import Settings
from nudge.llm.cleaning import plain
from nudge.llm.fake import FakeLLM, echo
from nudge.llm.writer import SYSTEM_PROMPTS
from nudge.platform import Platform
from tests.api.test_seed_examples import seed_text
from tests.conftest import make_settings, wait_for
from tests.proactive.helpers import (
    api_client,
    create_app,
    create_user,
    inbox,
    install,
    manifest,
    post_segments,
    uvicorn_app,
    wait_traces,
)

SEED_APP = Path(__file__).with_name("seed_app.py")
FACT = "Wants to run a marathon in October"


def test_seed_app_is_the_docs_example_byte_for_byte() -> None:
    text = seed_text()
    block = text[
        text.index("Complete Example\n") + len("Complete Example\n") : text.index("\nTesting\n")
    ]
    assert SEED_APP.read_text() == block.strip("\n") + "\n"


async def _world(client: httpx.AsyncClient, url: str) -> str:
    scopes = ["user_name", "user_facts", "user_context", "user_chat"]
    app = await create_app(client, manifest("Seed Mentor", url + "/webhook", scopes=scopes))
    await create_user(client, "ana", "Ana", [FACT])
    # The user grants name and context, not facts (nor chat).
    await install(client, "ana", app["app_id"], ["user_name", "user_context"])
    # A finished past conversation that full-text retrieval should bring into {{user_context}}.
    await post_segments(client, "ana", "past-1", "We moved the product launch to March.")
    r = await client.post("/v1/users/ana/sessions/past-1/finish", json={})
    assert r.status_code == 200, r.text
    return str(app["app_id"])


async def test_seed_app_one_notification_from_granted_scopes(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    with uvicorn_app("tests.proactive.seed_app:app") as url:
        app_id = await _world(client, url)
        await post_segments(
            client,
            "ana",
            "live-1",
            "I drafted the launch plan for the new product.",
            "What do you think about this approach?",
        )
        (trace,) = await wait_traces(client, app_id, 1, session_id="live-1")
        assert trace["outcome"] == "notified", trace
        assert trace["response"]["status"] == 200
        assert trace["scopes"]["effective"] == ["user_name", "user_context"]
        assert trace["scopes"]["decisions"]["user_facts"] == "not granted by the user"
        filled = trace["prompt"]["filled"]
        assert "You are a helpful mentor for Ana." in filled
        # {{user_context}} is the past conversation retrieval found, as Omi fills it; the live
        # transcript is the app's already.
        assert "We moved the product launch to March." in filled
        assert "What do you think about this approach?" not in filled
        assert "marathon" not in filled and "{{" not in filled
        assert trace["prompt"]["emptied"] == {"user_facts": "not granted by the user"}

        # The model was given exactly that prompt, and its cleaned output is the notification.
        # The model was given that prompt with each value fenced as data; the fake's echo of it
        # is the notification.
        assert isinstance(platform.llm, FakeLLM)
        system, seen = platform.llm.calls[-1]
        assert system == SYSTEM_PROMPTS["text"] and "<user_name>Ana</user_name>" in seen
        unfenced = re.sub(r"</?user_\w+>", "", seen)
        assert re.sub(r"\s+", " ", unfenced) == re.sub(r"\s+", " ", filled)
        expected = plain(echo(system, seen), 300)

        async def delivered() -> list[dict[str, object]]:
            return [n for n in await inbox(client, "ana") if n["app_id"] == app_id]

        (note,) = await wait_for(delivered)
        assert note["title"] == "Seed Mentor says" and note["body"] == expected
        assert note["data"]["navigate_to"] == f"/chat/{app_id}"
        assert trace["notification_id"] == note["id"]
        chat = (await client.get(f"/v1/users/ana/apps/{app_id}/messages")).json()["messages"]
        assert [m["text"] for m in chat] == [expected]

        # A second trigger within 30 s: the call is made and traced, nothing is sent.
        await post_segments(client, "ana", "live-1", "Any advice for the demo tomorrow?")
        traced = await wait_traces(client, app_id, 2, session_id="live-1")
        second = traced[1]
        assert second["outcome"] == "rate_limited"
        assert second["rate_limit"]["decision"] == "limited"
        assert 0 < second["rate_limit"]["retry_after_s"] <= 30
        assert "llm" not in second
        assert len(await delivered()) == 1


@pytest.mark.slow
async def test_seed_app_with_the_embedded_model(tmp_path: Path) -> None:
    """The same flow on the real SmolLM2 model: a short, clean, one-paragraph notification."""
    settings: Settings = make_settings(tmp_path, llm_provider="embedded")
    platform = await Platform.start(settings)
    try:
        async with api_client(platform) as client:
            with uvicorn_app("tests.proactive.seed_app:app") as url:
                app_id = await _world(client, url)
                await post_segments(
                    client, "ana", "live-2", "Should we launch in March? What do you think?"
                )
                (trace,) = await wait_traces(client, app_id, 1, timeout=120, session_id="live-2")
        assert trace["llm"]["provider"] == "embedded", trace
        body = trace["llm"]["output"]
        if trace["outcome"] in ("quiet", "held"):  # silence, or a message that failed the checks
            assert body == "" and trace["rate_limit"]["decision"] == "released"
            assert trace["llm"]["reason"] and trace["llm"]["raw"] is not None
            return
        assert trace["outcome"] == "notified", trace
        assert 5 <= len(body) <= 300 and "\n" not in body
        assert not body.lstrip().startswith(("-", "*", "1.")), body
    finally:
        await platform.close()
