"""A finished conversation's title, overview and category, written by the configured LLM, as Omi's
backend does; the plain ones from the transcript stay when it fails or answers nothing usable."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nudge.llm import LLM, LLMError
from nudge.proactive.conversation import CATEGORIES, DEFAULT_CATEGORY
from nudge.proactive.segments import transcript_line

log = logging.getLogger("nudge.summary")

TRANSCRIPT_MAX_CHARS = 6000  # the start of a long conversation says what it was about
TITLE_MAX_CHARS = 80
OVERVIEW_MAX_CHARS = 600

SYSTEM_PROMPT = (
    "You summarise a conversation for the user's records. Answer with exactly three lines:\n"
    "Title: a short title, at most 8 words\n"
    "Overview: one or two sentences on what was said and decided\n"
    f"Category: one word from this list: {', '.join(CATEGORIES)}"
)
_LINE = re.compile(r"^\W*(title|overview|category)\W*:\s*(.*?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Summary:
    title: str
    overview: str
    category: str


def transcript_text(segments: Iterable[dict[str, Any]]) -> str:
    """Segments (as Omi's ``TranscriptSegment`` dicts) as ``Speaker: text`` lines, bounded."""
    text = "".join(transcript_line(s["text"], s["speaker"], s["is_user"]) for s in segments)
    return text[:TRANSCRIPT_MAX_CHARS]


def _bounded(text: str, limit: int) -> str:
    text = " ".join(text.split()).strip("*\"' ")
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def parse_summary(output: str) -> Summary | None:
    """The three labelled lines of the model's answer; None without a title and an overview.
    A category outside Omi's list is ``other``, as Omi reads one."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        match = _LINE.match(line)
        if match and match.group(2):
            found.setdefault(match.group(1).lower(), match.group(2))
    title = _bounded(found.get("title", ""), TITLE_MAX_CHARS)
    overview = _bounded(found.get("overview", ""), OVERVIEW_MAX_CHARS)
    if len(title) < 3 or len(overview) < 10:
        return None
    category = found.get("category", "").strip(" .*\"'").lower()
    return Summary(title, overview, category if category in CATEGORIES else DEFAULT_CATEGORY)


async def summarize(llm: LLM, transcript: str) -> Summary | None:
    """The LLM's summary of ``transcript``; None when the plain one is to stay."""
    if llm.name == "fake" or not transcript.strip():
        return None
    try:
        generation = await llm.generate(SYSTEM_PROMPT, transcript)
    except LLMError as exc:
        log.warning("conversation summary not written by the LLM", extra={"error": str(exc)})
        return None
    summary = parse_summary(generation.text)
    if summary is None:
        log.info("LLM summary unusable; the plain one stays", extra={"model": generation.model})
    return summary
