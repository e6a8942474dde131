"""A memory-creation app written the way Omi's public apps are: the finished conversation is
parsed with a pydantic model holding the fields of Omi's own model as required (a missing one is
FastAPI's 422), and a short ``{"message"}`` says what was saved."""

from datetime import datetime

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

app = FastAPI()
stats = {"saved": [], "refused": 0}


class Structured(BaseModel):
    title: str
    overview: str
    emoji: str
    category: str
    action_items: list[dict]
    events: list[dict]


class TranscriptSegment(BaseModel):
    id: str | None
    text: str
    speaker: str | None
    speaker_id: int | None
    is_user: bool
    person_id: str | None
    start: float
    end: float


class Conversation(BaseModel):
    id: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    source: str | None
    language: str | None
    structured: Structured
    transcript_segments: list[TranscriptSegment]
    geolocation: dict | None
    photos: list[dict]
    apps_results: list[dict]
    plugins_results: list[dict]
    external_data: dict | None
    discarded: bool
    deleted: bool
    visibility: str
    status: str | None


@app.exception_handler(RequestValidationError)
async def count_refusals(request: Request, exc: RequestValidationError):
    stats["refused"] += 1
    return await request_validation_exception_handler(request, exc)


@app.post("/memory")
def memory_created(conversation: Conversation, uid: str):
    if conversation.discarded:
        return {}
    stats["saved"].append(
        {"uid": uid, "id": conversation.id, "segments": len(conversation.transcript_segments)}
    )
    return {"message": f"Saved: {conversation.structured.title}"}


@app.get("/stats")
def get_stats():
    return stats
