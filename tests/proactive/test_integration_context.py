"""What apps import comes back: an imported conversation reaches the other apps' memory webhooks
and the ``{{user_context}}`` of a proactive prompt, imported memories its ``{{user_facts}}``
(SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from fastapi import FastAPI, Request

from nudge.llm.fake import FakeLLM, echo
from nudge.platform import Platform
from nudge.proactive.summary import SYSTEM_PROMPT as SUMMARY_PROMPT
from tests.conftest import ServeASGI, make_settings, wait_for
from tests.proactive.helpers import (
    api_client,
    create_app,
    create_user,
    inbox,
    install,
    manifest,
    post_segments,
    wait_traces,
)

PROMPT = "Coach {{user_name}}. Known: {{user_facts}}. Before: {{user_context}}"
SCOPES = ["user_name", "user_facts", "user_context"]


class ScriptedLLM(FakeLLM):
    """Writes a summary when asked for one (the fake provider is never asked), echoes otherwise."""

    name: ClassVar[str] = "scripted"

    def __init__(self) -> None:
        super().__init__(reply=self.answer)

    @staticmethod
    def answer(system: str, prompt: str) -> str:
        if system == SUMMARY_PROMPT:
            return (
                "Title: Long run pacing\nOverview: The coach said to run slowly.\nCategory: sports"
            )
        return echo(system, prompt)


def apps_server(memories: list[dict[str, Any]], importer_calls: list[Any]) -> FastAPI:
    """A mentor (realtime, answers with a prompt), a memory app (records what it gets), and the
    importer's own memory webhook (never to be called with its own import)."""
    api = FastAPI()

    @api.post("/importer")
    async def importer(request: Request) -> dict[str, Any]:
        importer_calls.append(await request.json())
        return {}

    @api.post("/mentor")
    async def mentor(request: Request) -> dict[str, Any]:
        body = await request.json()
        said = " ".join(s["text"] for s in body["segments"]).lower()
        if "what do you think" not in said:
            return {}
        return {
            "session_id": body["session_id"],
            "notification": {"prompt": PROMPT, "params": SCOPES},
        }

    @api.post("/memory")
    async def memory(request: Request) -> dict[str, Any]:
        memories.append({"uid": request.query_params["uid"], **(await request.json())})
        return {}

    return api


async def test_imports_reach_memory_apps_and_proactive_prompts(
    tmp_path: Path, database_url: str
) -> None:
    platform = await Platform.start(make_settings(tmp_path, database_url=database_url))
    assert platform.dispatcher is not None
    llm = platform.dispatcher.pipeline.llm = ScriptedLLM()
    memories: list[dict[str, Any]] = []
    importer_calls: list[Any] = []
    server = apps_server(memories, importer_calls)
    try:
        async with api_client(platform) as client, ServeASGI(server) as served:
            await create_user(client, "ana", "Ana")
            importer = await create_app(
                client,
                {
                    "name": "Journal",
                    "capabilities": ["external_integration"],
                    "external_integration": {
                        "triggers_on": "memory_creation",
                        "webhook_url": served.url + "/importer",
                        "actions": [{"action": "create_conversation"}, {"action": "create_facts"}],
                    },
                },
            )
            mentor = await create_app(
                client, manifest("Mentor", served.url + "/mentor", scopes=SCOPES)
            )
            memo = await create_app(
                client, manifest("Memo", served.url + "/memory", trigger="memory_creation")
            )
            for app, scopes in ((importer, []), (mentor, SCOPES), (memo, [])):
                await install(client, "ana", app["app_id"], scopes)
            secret = {"Authorization": f"Bearer {importer['app_secret']}"}
            base = f"/v2/integrations/{importer['app_id']}"

            r = await client.post(
                f"{base}/user/memories",
                params={"uid": "ana"},
                headers=secret,
                json={"memories": [{"content": "Ana trains for the Lisbon marathon"}]},
            )
            assert r.status_code == 200, r.text
            r = await client.post(
                f"{base}/user/conversations",
                params={"uid": "ana"},
                headers=secret,
                json={
                    "text": "Coach: keep your long runs slow, about six minutes per kilometre.",
                    "text_source": "message",
                },
            )
            assert r.status_code == 200, r.text
            imported = r.json()["conversation"]

            # The memory app gets the imported conversation, in Omi's Conversation shape, with
            # the title and overview the LLM wrote from its text.
            (sent,) = await wait_for(lambda: _ready(memories))
            assert sent["uid"] == "ana" and sent["id"] == imported["id"]
            assert sent["source"] == "external_integration" and sent["app_id"] == importer["app_id"]
            assert "six minutes per kilometre" in sent["external_data"]["text"]
            assert sent["structured"]["title"] == "Long run pacing"
            assert sent["structured"]["category"] == "sports"
            summarized = [p for system, p in llm.calls if system == SUMMARY_PROMPT]
            assert summarized and "six minutes per kilometre" in summarized[0]
            (trace,) = await wait_traces(client, memo["app_id"], 1)
            assert trace["kind"] == "memory_creation"

            # A live conversation about running: the mentor's prompt brings both back.
            await post_segments(
                client, "ana", "live-1", "My long runs feel hard.", "What do you think?"
            )
            (notified,) = await wait_traces(client, mentor["app_id"], 1)
            filled = notified["prompt"]["filled"]
            assert "Ana trains for the Lisbon marathon" in filled
            assert "Long run pacing" in filled and "The coach said to run slowly." in filled
            assert imported["id"] in notified["context"]["user_context"]["conversations"]
            (note,) = await wait_for(lambda: inbox(client, "ana"))
            assert note["app_id"] == mentor["app_id"] and "Lisbon marathon" in note["body"]
            assert importer_calls == []  # its own import is not sent back to it
    finally:
        await platform.close()


async def _ready(found: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    return found or None
