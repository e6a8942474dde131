"""Memories (Omi's name for facts about the user) imported and read by apps.

Explicit memories are stored as given; from a ``text``, the configured LLM is asked for the facts
it states, and a line is kept only if it shares a content word with the text (a small model that
gives advice or invents things is not believed); failing that, the text's own sentences are the
facts, so an import still lands with nothing the user did not say. Each is a ``user_facts`` row,
in ``{{user_facts}}`` from then on, never stored twice (docs/omi.md)."""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Connection

from nudge.core.notifications import RateLimit
from nudge.errors import Invalid
from nudge.integrations.access import Limiting, authorize, limited
from nudge.integrations.limits import Policy
from nudge.llm import LLM, LLMError
from nudge.sdk import models
from nudge.store import accounts
from nudge.text import Line, Text, keywords

log = logging.getLogger("nudge.integrations")

FACT_MAX_CHARS = 2000  # as the platform API's facts
TEXT_MAX_CHARS = 50_000
MAX_MEMORIES = 100  # per request (Omi's batch endpoint takes 100)
MAX_EXTRACTED = 20
_MIN_FACT_CHARS = 8
_MIN_SENTENCE_WORDS = 3

EXTRACT_SYSTEM = (
    "You read a text a user shared and list the facts it states about the user: who they are, "
    "what they like, do, plan or need. One fact per line, each a short sentence in the third "
    "person (for example: User is vegetarian.). Only what the text says; no advice, no "
    "commentary. If the text states no fact about the user, answer only: NONE"
)


class Remembering(Limiting, Protocol):
    def extraction_llm(self) -> LLM | None:
        """The LLM that finds the facts in a text (None: the sentences fallback)."""


_LIST_MARKER = re.compile(r"^\s*(?:[-*•·]+|\d{1,2}[.)])\s*")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")


class MemoryIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content: Text = Field(min_length=1, max_length=FACT_MAX_CHARS)
    tags: list[Line] | None = Field(default=None, max_length=20)

    @model_validator(mode="after")
    def _clean(self) -> MemoryIn:
        if not self.content.strip():
            raise ValueError("content: must not be blank")
        for tag in self.tags or ():
            if not tag.strip() or len(tag) > 64:
                raise ValueError("tags: each tag must be 1 to 64 characters")
        return self


class CreateMemories(BaseModel):
    """Omi's ``ExternalIntegrationCreateMemory``."""

    model_config = ConfigDict(extra="ignore")
    text: Text | None = Field(default=None, max_length=TEXT_MAX_CHARS)
    text_source: Literal["email", "social_post", "other"] = "other"
    text_source_spec: Line | None = Field(default=None, max_length=200)
    memories: list[MemoryIn] | None = Field(default=None, max_length=MAX_MEMORIES)


class MemoryItem(models.MemoryItem):
    """Omi's ``MemoryItem``, from a ``user_facts`` row."""

    @classmethod
    def from_row(cls, row: Any) -> MemoryItem:
        created = datetime.fromtimestamp(row.created_at, tz=UTC)
        manual = row.app_id is None
        return cls(
            id=str(row.id),
            uid=row.uid,
            content=row.text,
            category="system",
            tags=list(row.tags or []),
            created_at=created,
            updated_at=created,
            manually_added=manual,
            reviewed=manual,
            app_id=row.app_id,
        )


def _about(line: str, words: set[str]) -> bool:
    return bool(words.intersection(keywords(line, limit=100)))


def parse_extraction(output: str, source_text: str) -> list[str]:
    """The LLM's facts that are about ``source_text``, cleaned, without repeats."""
    words = set(keywords(source_text, limit=10_000))
    facts: list[str] = []
    for raw in output.splitlines():
        line = _LIST_MARKER.sub("", raw).strip().strip("\"'“”").strip()
        if line.upper().rstrip(".") == "NONE" or not _MIN_FACT_CHARS <= len(line) <= 500:
            continue
        if _about(line, words) and line not in facts:
            facts.append(line)
    return facts[:MAX_EXTRACTED]


def sentences(text: str) -> list[str]:
    """The fallback: each sentence of a few words or more is a fact."""
    found: list[str] = []
    for match in _SENTENCE.finditer(text):
        sentence = " ".join(match.group().split())
        if len(sentence.split()) >= _MIN_SENTENCE_WORDS and sentence not in found:
            found.append(sentence[:FACT_MAX_CHARS])
    return found[:MAX_EXTRACTED]


async def extract(llm: LLM | None, text: str, source: str) -> tuple[list[str], str]:
    """The facts in ``text`` and how they were found: ``llm`` or ``sentences``."""
    if llm is not None:
        try:
            generation = await llm.generate(EXTRACT_SYSTEM, f"Source: {source}\n\nText:\n{text}")
        except LLMError as exc:
            log.warning("memory extraction fell back to sentences", extra={"error": str(exc)})
        else:
            facts = parse_extraction(generation.text, text)
            if facts:
                return facts, "llm"
    return sentences(text), "sentences"


def store_memories(
    conn: Connection, uid: str, app_id: str, memories: list[tuple[str, list[str]]]
) -> list[MemoryItem]:
    """Insert the ``(content, tags)`` pairs the user does not have yet; returns those stored."""
    have = accounts.fact_texts_among(conn, uid, {text for text, _ in memories})
    now = time.time()
    rows: list[dict[str, Any]] = []
    for text, tags in memories:
        if text not in have:
            have.add(text)
            rows.append(
                {"uid": uid, "text": text, "created_at": now, "app_id": app_id, "tags": tags}
            )
    if not rows:
        return []
    return [MemoryItem.from_row(r) for r in accounts.insert_facts(conn, rows)]


async def import_memories(
    platform: Remembering, authorization: str | None, app_id: str, uid: str, body: CreateMemories
) -> tuple[list[MemoryItem], RateLimit]:
    """``POST /v2/integrations/{app_id}/user/memories``: explicit memories as given, then those
    found in ``text``; returns those stored and the request window."""
    policy = Policy("integration:memories", platform.settings.integration_memories_per_hour)
    async with limited(platform, authorization, app_id, uid, "create_memories", policy) as rate:
        pairs = [(m.content.strip(), list(m.tags or [])) for m in body.memories or ()]
        text = (body.text or "").strip()
        if not text and not pairs:
            raise Invalid("text or memories: either text or explicit memories are required")
        if text:
            source = body.text_source_spec or body.text_source
            facts, how = await extract(platform.extraction_llm(), text, source)
            log.info(
                "memories extracted", extra={"app_id": app_id, "count": len(facts), "how": how}
            )
            pairs.extend((fact, []) for fact in facts)
        work = partial(store_memories, uid=uid, app_id=app_id, memories=pairs)
        return await platform.db.write(work), rate


def memories_of(conn: Connection, uid: str, *, limit: int, offset: int = 0) -> list[MemoryItem]:
    """The user's memories, newest first (every app's and the platform's)."""
    return [MemoryItem.from_row(r) for r in accounts.facts(conn, uid, limit=limit, offset=offset)]


async def read_memories(
    platform: Limiting, authorization: str | None, app_id: str, uid: str, limit: int, offset: int
) -> list[MemoryItem]:
    """``GET /v2/integrations/{app_id}/memories``: all of the user's memories, as Omi lists
    them to any app allowed to read them."""

    def read(conn: Connection) -> list[MemoryItem]:
        authorize(conn, authorization, app_id, uid, "read_memories")
        return memories_of(conn, uid, limit=limit, offset=offset)

    return await platform.db.query(read)
