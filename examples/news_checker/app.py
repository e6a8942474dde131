"""A realtime news checker on the Nudge SDK (the "Realtime News checker" of Omi's guide).

It watches live transcripts for
- a well-known myth: it corrects it at once with a direct notification, either by answering the
  webhook with ``{"message": ...}`` or, when the app's API credentials are configured, by sending it
  with the SDK client (an idempotency key per user, session and myth, so a retry never doubles it);
- a news topic or a factual claim: it answers with a prompt asking the platform's LLM to check what
  was said against the conversation (``{{user_context}}``), saying nothing when it is accurate.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from examples.common import AppSettings, serve
from examples.news_checker.checks import CLAIM_MARKERS, MYTHS, TOPICS
from nudge.sdk import AsyncNudgeClient
from nudge.sdk.webhook import Answer, TranscriptEvent, WebhookKit, message, proactive

log = logging.getLogger("examples.news_checker")

PROMPT = """You are a careful, friendly fact checker for {{user_name}}.
Someone in their live conversation just talked about TOPICS. Here is the conversation:
{{user_context}}
If a specific factual claim in it is wrong or misleading, write one short, polite notification
(under 40 words) with the correction and where to check it. If everything said is accurate, or
you are not sure, answer with nothing."""
PARAMS = ("user_name", "user_context")


class NewsChecker:
    """The transcript handler. ``client``: send myth corrections through the API instead of
    answering them."""

    def __init__(self, client: AsyncNudgeClient | None = None) -> None:
        self.client = client
        self._myth_by_phrase = {p: m for m in MYTHS for p in m.phrases}
        self._topic_by_keyword = {k: t for t, words in TOPICS.items() for k in words}

    async def __call__(self, event: TranscriptEvent) -> Answer | None:
        myths = [self._myth_by_phrase[p] for p in event.matches(self._myth_by_phrase)]
        if myths:
            return await self._correct(event, myths[0].key, myths[0].correction)
        topics = list(
            dict.fromkeys(self._topic_by_keyword[k] for k in event.matches(self._topic_by_keyword))
        )
        claims = event.matches(CLAIM_MARKERS)
        if not topics and not claims:
            return None
        about = " and ".join(topics) if topics else "a factual claim"
        log.info("checking", extra={"uid": event.uid, "topics": topics, "claims": claims})
        return proactive(PROMPT.replace("TOPICS", about), PARAMS)

    async def _correct(self, event: TranscriptEvent, key: str, correction: str) -> Answer | None:
        if self.client is None:
            return message(correction)
        result = await self.client.send_notification(
            event.uid, correction, idempotency_key=f"news:{event.uid}:{event.session_id}:{key}"
        )
        log.info(
            "correction sent",
            extra={"uid": event.uid, "myth": key, "notification_id": result.notification_id},
        )
        return None


def create_app(settings: AppSettings | None = None) -> FastAPI:
    settings = settings or AppSettings.from_env()
    client = settings.client()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if client is not None:
            await client.aclose()

    kit = WebhookKit(settings.webhook_secret, on_transcript=NewsChecker(client))
    app = FastAPI(title="News checker", lifespan=lifespan)
    app.include_router(kit.router())

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "sessions": len(kit.sessions), "sends_via_api": client is not None}

    return app


def main(argv: list[str] | None = None) -> None:
    serve(create_app, default_port=8002, argv=argv)


if __name__ == "__main__":
    main()
