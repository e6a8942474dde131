"""A realtime app written the way Omi's public "hey omi" apps are (Flask there; plain Starlette
here, with the same request handling): state per ``session_id``, and an answer ``{"message": ...}``
when the trigger phrase is heard, else ``{"status": "success"}``."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

TRIGGER = "hey omi"
sessions: dict = {}  # session_id -> answers given
stats = {"calls": 0, "answered": 0, "session_ids": []}


async def webhook(request: Request) -> JSONResponse:
    data = await request.json()
    stats["calls"] += 1
    session_id = data.get("session_id")
    uid = request.query_params.get("uid")
    if not session_id or not uid:
        return JSONResponse({"status": "error", "message": "No session_id provided"}, 400)
    stats["session_ids"].append(session_id)
    for segment in data.get("segments", []):
        text = segment.get("text", "").lower().strip()
        if TRIGGER in text:
            question = text.split(TRIGGER, 1)[1].strip(" ,") or "yes?"
            sessions[session_id] = sessions.get(session_id, 0) + 1
            stats["answered"] += 1
            return JSONResponse({"message": f"Answer {stats['answered']}: about {question!r}"})
    return JSONResponse({"status": "success"})


async def get_stats(request: Request) -> JSONResponse:
    return JSONResponse(stats)


app = Starlette(routes=[Route("/webhook", webhook, methods=["POST"]), Route("/stats", get_stats)])
