"""A realtime app written the way Omi's public apps are (its mentor plugin): a FastAPI router that
refuses any call whose ``session_id`` is not the uid, keeps its transcript buffer per user across
conversations, and asks for a proactive notification when it hears "what do you think"."""

import re

from fastapi import APIRouter, FastAPI, HTTPException
from pydantic import BaseModel

router = APIRouter()
buffers: dict = {}  # uid -> the texts heard, across conversations
scanned: dict = {}  # uid -> how many of them were already looked at
stats = {"calls": 0, "refused": 0, "asked": 0, "conversations": []}


class TranscriptSegment(BaseModel):
    text: str
    speaker: str | None = "SPEAKER_00"
    speaker_id: int | None = None
    is_user: bool
    start: float
    end: float


class RealtimePluginRequest(BaseModel):
    session_id: str
    segments: list[TranscriptSegment]


def normalize(text: str) -> str:
    return re.sub(r" +", " ", re.sub(r"[,?.!]", " ", text)).lower().strip()


@router.post("/mentor")
def mentoring(data: RealtimePluginRequest, uid: str):
    stats["calls"] += 1
    if data.session_id != uid:
        stats["refused"] += 1
        raise HTTPException(status_code=403, detail="session_id must match uid")
    buffer = buffers.setdefault(uid, [])
    buffer.extend(segment.text for segment in data.segments)
    new_text = normalize(" ".join(buffer[scanned.get(uid, 0) :]))
    if "what do you think" not in new_text:
        return {}
    scanned[uid] = len(buffer)
    stats["asked"] += 1
    prompt = (
        "Conversation:\n"
        + "\n".join(buffer[-6:])
        + "\nYou are a mentor for {{user_name}}. Past conversations: {{user_context}}.\n"
        "Give one short piece of advice."
    )
    return {
        "session_id": uid,
        "notification": {
            "prompt": prompt,
            "params": ["user_name", "user_context"],
            "context": {"question": "party venue", "filters": {"topics": ["venue"]}},
        },
    }


@router.get("/stats")
def get_stats():
    return stats


app = FastAPI()
app.include_router(router)
