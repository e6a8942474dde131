"""Live transcript segments and conversation details as clients send them: parsing and checks."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nudge.errors import Invalid
from nudge.proactive.conversation import GeolocationIn
from nudge.text import Line, Text

SESSION_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


class SegmentIn(BaseModel):
    """One transcript segment, as Omi sends them (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")
    text: Text = Field(min_length=1, max_length=20_000)
    speaker: Line = Field(default="SPEAKER_00", min_length=1, max_length=64)
    speaker_id: int | None = Field(default=None, ge=0, le=10_000)
    is_user: bool = False
    start: float = Field(default=0.0, ge=0, le=1e9)
    end: float = Field(default=0.0, ge=0, le=1e9)

    def speaker_number(self) -> int:
        if self.speaker_id is not None:
            return self.speaker_id
        digits = re.search(r"(\d+)$", self.speaker)
        return int(digits.group(1)) if digits else 0

    def row(self, conversation_id: str, uid: str, now: float) -> dict[str, Any]:
        """The ``segments`` row that stores it."""
        row = self.model_dump() | {"speaker_id": self.speaker_number(), "created_at": now}
        return row | {"conversation_id": conversation_id, "uid": uid}


class SegmentsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    segments: list[SegmentIn] = Field(min_length=1, max_length=500)


class FinishIn(BaseModel):
    """Optional details of the conversation; without a title and overview, plain ones are taken
    from the text (and the LLM may write better ones, see ``nudge.proactive.summary``)."""

    model_config = ConfigDict(extra="forbid")
    title: Line | None = Field(default=None, max_length=500)
    overview: Text | None = Field(default=None, max_length=10_000)
    language: Line | None = Field(default=None, min_length=2, max_length=20)
    geolocation: GeolocationIn | None = None


def check_session_id(session_id: str) -> str:
    if not SESSION_RE.match(session_id):
        raise Invalid("session_id: must be 1-128 characters of letters, digits and _ . : @ -")
    return session_id


def transcript_line(text: str, speaker: str, is_user: bool) -> str:
    return f"{'User' if is_user else speaker}: {text}\n"


def _sentences(text: str, max_chars: int) -> str:
    out = ""
    for sentence in re.findall(r"[^.!?]+[.!?]*", text):
        candidate = f"{out} {sentence.strip()}".strip()
        if len(candidate) > max_chars:
            break
        out = candidate
    return out or text[: max_chars - 1].rsplit(" ", 1)[0] + "…"


def derive_summary(segments: list[Any]) -> tuple[str, str]:
    """A plain title and overview from the transcript (the fallback when no LLM writes them)."""
    text = " ".join(s.text.strip() for s in segments).strip()
    if not text:
        return "Empty conversation", ""
    first = segments[0].text.strip()
    title = first if len(first) <= 60 else first[:59].rsplit(" ", 1)[0] + "…"
    return title, _sentences(text, 500)
