"""Live transcripts in (POST and WebSocket), finishing sessions, and traces for app developers."""

from __future__ import annotations

import hmac
import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, WebSocket, WebSocketDisconnect
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select, update

from nudge.api.deps import AdminDep, PlatformDep, UserDep
from nudge.api.errors import describe_validation
from nudge.core.apps import authenticate_app, get_app, parse_bearer
from nudge.core.errors import NudgeError, Unavailable
from nudge.core.users import authenticate_user
from nudge.platform import Platform
from nudge.proactive import ingest, traces
from nudge.store.models import App

router = APIRouter(tags=["proactive"])

SEGMENT_LIST = TypeAdapter(list[ingest.SegmentIn])


async def store_segments(
    platform: Platform, uid: str, session_id: str, segments: list[ingest.SegmentIn]
) -> dict[str, Any]:
    """Durably store segments (batched with concurrent requests); their flush is scheduled."""
    if platform.ingestor is None:
        raise Unavailable("this process does not take transcripts")
    return await platform.ingestor.store(uid, session_id, segments)


@router.post(
    "/v1/users/{uid}/sessions/{session_id}/segments",
    status_code=202,
    dependencies=[UserDep],
    summary="Add live transcript segments to a session (created on first use)",
)
async def post_segments(
    uid: str, session_id: str, body: ingest.SegmentsIn, platform: PlatformDep
) -> dict[str, Any]:
    return await store_segments(platform, uid, session_id, body.segments)


@router.post(
    "/v1/users/{uid}/sessions/{session_id}/finish",
    dependencies=[UserDep],
    summary="End a session: last segments and memory_creation webhooks go out",
)
async def finish(
    uid: str,
    session_id: str,
    platform: PlatformDep,
    body: Annotated[ingest.FinishIn | None, Body()] = None,
) -> dict[str, Any]:
    summary = body or ingest.FinishIn()
    result: dict[str, Any] = await platform.writer.run(
        lambda conn: ingest.finish_conversation(conn, uid, session_id, summary)
    )
    if platform.dispatcher is not None:
        platform.dispatcher.wake(session_id)
    return result


@router.get(
    "/v1/users/{uid}/sessions/{session_id}",
    dependencies=[UserDep],
    summary="A session: its segments, status and summary",
)
async def get_session(uid: str, session_id: str, platform: PlatformDep) -> dict[str, Any]:
    async with platform.db.read() as conn:
        conv = await conn.run_sync(ingest.get_conversation, uid, session_id)
        segments = await conn.run_sync(ingest.conversation_segments, session_id)
    return ingest.conversation_json(conv, segments) | {"status": conv.status}


def _parse_ws_message(raw: str) -> list[ingest.SegmentIn]:
    """A JSON list of segments, ``{"segments": [...]}``, or one segment object."""
    data = json.loads(raw)
    if isinstance(data, dict) and "segments" in data:
        data = data["segments"]
    elif isinstance(data, dict):
        data = [data]
    if isinstance(data, list) and not 1 <= len(data) <= 500:
        raise ValueError("send 1 to 500 segments per message")
    return SEGMENT_LIST.validate_python(data)


@router.websocket("/v1/users/{uid}/listen")
async def listen(websocket: WebSocket, uid: str, session_id: str = Query(...)) -> None:
    """Live segments over a WebSocket. Auth: ``Authorization: Bearer`` or ``?token=``.

    Each text message is a JSON list of segments (or ``{"segments": [...]}``); the answer is
    ``{"session_id", "accepted"}`` or ``{"error", "status"}``. The session stays open until
    ``POST .../finish``: a dropped connection can reconnect and continue it.
    """
    platform: Platform = websocket.app.state.platform
    await websocket.accept()
    token = websocket.query_params.get("token")
    authorization = websocket.headers.get("authorization") or (f"Bearer {token}" if token else None)
    try:
        ingest.check_session_id(session_id)
        async with platform.db.read() as conn:
            await authenticate_user(conn, authorization, uid, platform.admin_token)
    except NudgeError as exc:
        await websocket.send_json({"error": exc.detail, "status": exc.status_code})
        await websocket.close(code=1008, reason=exc.detail[:120])
        return
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                await websocket.send_json(
                    {
                        "error": "binary frames (audio) are not accepted: send transcript "
                        "segments as JSON text",
                        "status": 422,
                    }
                )
                continue
            try:
                segments = _parse_ws_message(raw)
                await websocket.send_json(await store_segments(platform, uid, session_id, segments))
            except ValidationError as exc:
                detail = describe_validation(list(exc.errors()))
                await websocket.send_json({"error": detail, "status": 422})
            except ValueError as exc:
                await websocket.send_json({"error": f"bad message: {exc}", "status": 422})
            except NudgeError as exc:
                await websocket.send_json({"error": exc.detail, "status": exc.status_code})
    except WebSocketDisconnect:
        return


async def require_app_developer(
    app_id: str, platform: PlatformDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """The admin token, or a live app secret of this app."""
    token = parse_bearer(authorization)
    if hmac.compare_digest(token.encode(), platform.admin_token.encode()):
        return
    async with platform.db.read() as conn:
        await authenticate_app(conn, authorization, app_id)


DeveloperDep = Depends(require_app_developer)


@router.get(
    "/v1/apps/{app_id}/traces",
    dependencies=[DeveloperDep],
    summary="What happened on each webhook call to this app, newest first",
)
async def list_traces(
    app_id: str,
    platform: PlatformDep,
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, max_length=100),
    session_id: str | None = Query(None, max_length=128),
    uid: str | None = Query(None, max_length=128),
) -> dict[str, Any]:
    async with platform.db.read() as conn:
        app = await get_app(conn, app_id)
        failing_since = await conn.scalar(select(App.webhook_failing_since).where(App.id == app_id))
        page = await traces.list_traces(
            conn, app_id, limit=limit, cursor=cursor, session_id=session_id, uid=uid
        )
    page["app"] = {
        "status": app.status,
        "status_reason": app.status_reason,
        "webhook_failing_since": failing_since,
    }
    return page


@router.get(
    "/v1/apps/{app_id}/traces/{trace_id}",
    dependencies=[DeveloperDep],
    summary="One trace",
)
async def get_trace(app_id: str, trace_id: str, platform: PlatformDep) -> dict[str, Any]:
    async with platform.db.read() as conn:
        return await traces.get_trace(conn, app_id, trace_id)


@router.post(
    "/v1/apps/{app_id}/enable",
    dependencies=[AdminDep],
    summary="Re-enable an app that was disabled because its webhook kept failing",
)
async def enable_app(app_id: str, platform: PlatformDep) -> dict[str, Any]:
    async with platform.db.begin() as conn:
        await get_app(conn, app_id)
        await conn.execute(
            update(App)
            .where(App.id == app_id)
            .values(status="active", status_reason="", webhook_failing_since=None)
        )
        app = await get_app(conn, app_id)
    if platform.webhooks is not None:
        platform.webhooks.breakers.pop(app_id, None)
    return app.public()
