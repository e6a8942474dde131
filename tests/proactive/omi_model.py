"""Omi's ``Conversation`` model as a field-and-type list, written from Omi's backend
(``backend/models/conversation.py``, ``structured.py``, ``transcript_segment.py``,
``conversation_enums.py``), to check what Nudge sends memory-creation webhooks against it.

A type is a Python type, a tuple of them (``type(None)`` for Optional), or a set of strings (one
of Omi's enum values). ``datetime`` means an ISO 8601 string that ``datetime.fromisoformat`` reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

NONE = type(None)

CONVERSATION_SOURCES = {
    "friend",
    "omi",
    "fieldy",
    "bee",
    "plaud",
    "frame",
    "friend_com",
    "apple_watch",
    "phone",
    "phone_call",
    "desktop",
    "openglass",
    "screenpipe",
    "workflow",
    "sdcard",
    "external_integration",
    "limitless",
    "rayban_meta",
    "onboarding",
    "unknown",
}
CATEGORIES = {
    "personal",
    "education",
    "health",
    "finance",
    "legal",
    "philosophy",
    "spiritual",
    "science",
    "entrepreneurship",
    "parenting",
    "romantic",
    "travel",
    "inspiration",
    "technology",
    "business",
    "social",
    "work",
    "sports",
    "politics",
    "literature",
    "history",
    "architecture",
    "music",
    "weather",
    "news",
    "entertainment",
    "psychology",
    "real",
    "design",
    "family",
    "economics",
    "environment",
    "other",
}
VISIBILITY = {"private", "shared", "public"}
STATUS = {"in_progress", "processing", "merging", "completed", "failed"}

CONVERSATION: dict[str, Any] = {
    "id": str,
    "created_at": datetime,
    "updated_at": (datetime, NONE),
    "started_at": (datetime, NONE),
    "finished_at": (datetime, NONE),
    "source": CONVERSATION_SOURCES,
    "language": (str, NONE),
    "structured": dict,
    "transcript_segments": list,
    "transcript_segments_compressed": (bool, NONE),
    "geolocation": (dict, NONE),
    "photos": list,
    "audio_files": list,
    "conversation_audio": (dict, NONE),
    "private_cloud_sync_enabled": bool,
    "apps_results": list,
    "suggested_summarization_apps": list,
    "speaker_label_suggestions": list,
    "plugins_results": list,
    "external_data": (dict, NONE),
    "app_id": (str, NONE),
    "discarded": bool,
    "visibility": VISIBILITY,
    "starred": bool,
    "processing_memory_id": (str, NONE),
    "processing_conversation_id": (str, NONE),
    "status": STATUS,
    "is_locked": bool,
    "deferred": bool,
    "data_protection_level": (str, NONE),
    "folder_id": (str, NONE),
    "call_id": (str, NONE),
    "calendar_event": (dict, NONE),
    "client_device_id": (str, NONE),
    "client_platform": (str, NONE),
    # Omi's older model (apps built on it still parse these).
    "deleted": bool,
    "postprocessing": (dict, NONE),
}
STRUCTURED: dict[str, Any] = {
    "title": str,
    "overview": str,
    "emoji": str,
    "category": CATEGORIES,
    "sections": list,
    "action_items": list,
    "events": list,
}
TRANSCRIPT_SEGMENT: dict[str, Any] = {
    "id": (str, NONE),
    "text": str,
    "speaker": (str, NONE),
    "speaker_id": (int, NONE),
    "is_user": bool,
    "person_id": (str, NONE),
    "start": (float, int),
    "end": (float, int),
    "translations": (list, NONE),
}


def _fits(value: Any, kind: Any) -> bool:
    if isinstance(kind, set):
        return value in kind
    kinds = kind if isinstance(kind, tuple) else (kind,)
    for k in kinds:
        if k is datetime and isinstance(value, str):
            try:
                datetime.fromisoformat(value)
                return True
            except ValueError:
                continue
        elif k is not datetime and isinstance(value, k) and not (k is int and value is True):
            return True
    return False


def problems(value: dict[str, Any], fields: dict[str, Any], path: str = "") -> list[str]:
    """Fields missing or of the wrong type (Omi's model ignores extra ones)."""
    out = []
    for name, kind in fields.items():
        if name not in value:
            out.append(f"{path}{name}: missing")
        elif not _fits(value[name], kind):
            out.append(f"{path}{name}: {value[name]!r} is not {kind}")
    return out


def conversation_problems(payload: dict[str, Any]) -> list[str]:
    """Everything in ``payload`` that Omi's ``Conversation`` would not read as Omi writes it."""
    found = problems(payload, CONVERSATION)
    found += problems(payload.get("structured") or {}, STRUCTURED, "structured.")
    for i, segment in enumerate(payload.get("transcript_segments") or []):
        found += problems(segment, TRANSCRIPT_SEGMENT, f"transcript_segments.{i}.")
    return found
