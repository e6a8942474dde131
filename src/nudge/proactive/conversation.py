"""A conversation in the shape of Omi's ``Conversation`` model (memory webhooks, the platform API).

Every field of Omi's model is there with Omi's types; fields Nudge has no data for carry Omi's
own defaults, and ``deleted`` and ``postprocessing`` come from Omi's older model, which apps still
parse."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nudge.text import Line, Text

# Omi's CategoryEnum (models/conversation_enums.py), in its order.
_CATEGORIES = (
    "personal education health finance legal philosophy spiritual science entrepreneurship "
    "parenting romantic travel inspiration technology business social work sports politics "
    "literature history architecture music weather news entertainment psychology real design "
    "family economics environment other"
)
CATEGORIES = tuple(_CATEGORIES.split())
LIVE_SOURCE = "omi"  # Omi's ConversationSource for a conversation streamed from a device
IMPORTED_SOURCE = "external_integration"  # ... and for one an app imported
DEFAULT_EMOJI = "🧠"
DEFAULT_CATEGORY = "other"
# Nudge's states as Omi's ConversationStatus.
OMI_STATUS = {"live": "in_progress", "finishing": "processing", "finished": "completed"}


class GeolocationIn(BaseModel):
    """Where a conversation happened, as Omi's ``Geolocation``."""

    model_config = ConfigDict(extra="ignore")
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    address: Text | None = Field(default=None, max_length=1000)
    google_place_id: Line | None = Field(default=None, max_length=300)
    location_type: Line | None = Field(default=None, max_length=100)


def new_conversation_id() -> str:
    """Omi's conversation ids are UUIDs."""
    return str(uuid.uuid4())


def conversation_row(**values: Any) -> dict[str, Any]:
    """A new ``conversations`` row: ``values`` over the defaults (a new id, Omi's defaults)."""
    return {
        "id": new_conversation_id(),
        **dict.fromkeys(("session_id", "language", "geolocation", "external_data", "app_id")),
        **dict.fromkeys(("finished_at", "silence_due_at", "flush_due_at", "flush_lease_until")),
        "source": LIVE_SOURCE,
        "discarded": False,
        "title": "",
        "overview": "",
        "emoji": DEFAULT_EMOJI,
        "category": DEFAULT_CATEGORY,
        "action_items": [],
        "events": [],
        "summary_pending": False,
        "transcript": "",
        "flushed_upto": 0,
    } | values


def iso(ts: float | None) -> str | None:
    """A stored time (UNIX seconds) as Omi sends datetimes."""
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat()


def segment_uuid(conversation_id: str, segment_id: int) -> str:
    """A stable id for a stored segment (Omi's segment ids are UUIDs)."""
    name = f"nudge/conversations/{conversation_id}/{segment_id}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def transcript_segment(conversation_id: str, row: Any) -> dict[str, Any]:
    """A stored segment as Omi's ``TranscriptSegment``."""
    return {
        "id": segment_uuid(conversation_id, row.id),
        "text": row.text,
        "speaker": row.speaker,
        "speaker_id": row.speaker_id,
        "is_user": bool(row.is_user),
        "person_id": None,
        "start": row.start,
        "end": row.end,
        "translations": [],
    }


def segment_json(row: Any) -> dict[str, Any]:
    """A segment as realtime webhooks carry it (contract.md §2)."""
    return {
        k: getattr(row, k) for k in ("text", "speaker", "speaker_id", "is_user", "start", "end")
    }


def conversation_json(conv: Any, segments: list[Any]) -> dict[str, Any]:
    """A stored conversation (a ``conversations`` row) and its segments, as Omi's model."""
    return {
        "id": conv.id,
        "created_at": iso(conv.created_at),
        "updated_at": iso(conv.finished_at or conv.started_at),
        "started_at": iso(conv.started_at),
        "finished_at": iso(conv.finished_at),
        "source": conv.source,
        "language": conv.language,
        "structured": {
            "title": conv.title,
            "overview": conv.overview,
            "emoji": conv.emoji,
            "category": conv.category,
            "sections": [],
            "action_items": list(conv.action_items or []),
            "events": list(conv.events or []),
        },
        "transcript_segments": [transcript_segment(conv.id, s) for s in segments],
        "transcript_segments_compressed": False,
        "geolocation": conv.geolocation,
        "photos": [],
        "audio_files": [],
        "conversation_audio": None,
        "private_cloud_sync_enabled": False,
        "apps_results": [],
        "suggested_summarization_apps": [],
        "speaker_label_suggestions": [],
        "plugins_results": [],
        "external_data": conv.external_data,
        "app_id": conv.app_id,
        "discarded": bool(conv.discarded),
        "deleted": False,
        "visibility": "private",
        "starred": False,
        "processing_memory_id": None,
        "processing_conversation_id": None,
        "status": OMI_STATUS.get(conv.status, "completed"),
        "is_locked": False,
        "deferred": False,
        "data_protection_level": None,
        "folder_id": None,
        "call_id": None,
        "calendar_event": None,
        "client_device_id": None,
        "client_platform": None,
        "postprocessing": None,
    }
