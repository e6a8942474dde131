"""The mentor app of Omi's proactive-notification docs, on the Nudge SDK.

When someone asks "what do you think" or "any advice" in a live conversation, it answers with the
mentor prompt and the discussion so far (as Omi's own mentor does: the app has the transcript);
the platform fills in the user's name, facts and related past conversations, has its LLM write
the advice and pushes it. Everything else (signatures, segments per conversation, never
triggering twice on the same words) is the SDK's ``WebhookKit``.
"""

from __future__ import annotations

from fastapi import FastAPI

from examples.common import AppSettings, serve
from nudge.sdk.webhook import Answer, SessionStore, TranscriptEvent, WebhookKit, proactive

TRIGGERS = ("what do you think", "any advice")
PROMPT = """You are a helpful mentor for {{user_name}}.
Based on their goals ({{user_facts}}), what they talked about before ({{user_context}}) and the
discussion below, provide specific, actionable advice in under 100 words.

Discussion:
"""
PARAMS = ("user_name", "user_facts", "user_context")


def on_transcript(event: TranscriptEvent) -> Answer | None:
    if event.matches(TRIGGERS):
        return proactive(PROMPT + event.transcript, PARAMS)
    return None


def create_app(settings: AppSettings | None = None) -> FastAPI:
    settings = settings or AppSettings.from_env()
    kit = WebhookKit(settings.webhook_secret, on_transcript=on_transcript, sessions=SessionStore())
    return kit.app(title="Mentor")


def main(argv: list[str] | None = None) -> None:
    serve(create_app, default_port=8001, argv=argv)


if __name__ == "__main__":
    main()
