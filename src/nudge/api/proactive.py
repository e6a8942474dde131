"""Live transcripts in (POST and WebSocket), finishing sessions, and traces for app developers.

The segments POST is the hottest route of live sessions; its plain case is answered by
:class:`FastSegments`, ahead of FastAPI's router (docs/decisions.md), and anything else goes to
the typed route, which answers it (errors included) as before."""

from __future__ import annotations

import json
import re
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, WebSocket, WebSocketDisconnect
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Connection
from starlette.routing import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nudge import auth
from nudge.api.asgi import first_headers, respond_json
from nudge.api.deps import AdminDep, DeveloperDep, PlatformDep, UserDep
from nudge.api.errors import respond_error, socket_error
from nudge.core.apps import AppRecord, get_app
from nudge.errors import NudgeError, Unavailable
from nudge.platform import Platform
from nudge.proactive import ingest, traces
from nudge.proactive.segments import SESSION_RE, FinishIn, SegmentIn, SegmentsIn, check_session_id
from nudge.sdk.models import AppInfo, SegmentsAccepted, SessionConversation, Trace, TracePage
from nudge.store.traces import enable, webhook_failing_since
from nudge.text import check_text, text_problem

router = APIRouter(tags=["proactive"])

SEGMENT_LIST = TypeAdapter(list[SegmentIn])
BINARY_REFUSED = "binary frames (audio) are not accepted: send transcript segments as JSON text"
SEGMENTS_PATH = "/v1/users/{uid}/sessions/{session_id}/segments"
_SEGMENTS_RE = re.compile(r"/v1/users/([^/]+)/sessions/([^/]+)/segments")


async def store_segments(
    platform: Platform,
    uid: str,
    session_id: str,
    segments: list[SegmentIn],
    token_hash: str | None = None,
) -> dict[str, Any]:
    """Durably store segments (batched with concurrent requests); their flush is scheduled."""
    if platform.ingestor is None:
        raise Unavailable("this process does not take transcripts")
    return await platform.ingestor.store(uid, session_id, segments, token_hash=token_hash)


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    """A ``receive`` that gives ``body`` again (then a disconnect)."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return messages.pop() if messages else {"type": "http.disconnect"}

    return receive


class FastSegments:
    """ASGI middleware ahead of FastAPI's router (matching every route costs the hot path): the
    segments POST with the admin token or a user-shaped one, a plain uid and session id and a
    JSON body that validates, checked without routing; anything else goes on, body and all."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _SEGMENTS_RE.fullmatch(get_route_path(scope))
        if match is None:
            await self.app(scope, receive, send)
            return
        body = await _body(receive)
        platform: Platform = scope["app"].state.platform
        uid, session_id = match[1], match[2]
        plain = self._plain(scope, body, uid, session_id, platform.admin_token)
        if plain is None:
            await self.app(scope, _replay(body), send)
            return
        segments, token_hash = plain
        try:
            stored = await store_segments(platform, uid, session_id, segments, token_hash)
        except Exception as exc:
            await respond_error(send, exc, SEGMENTS_PATH)
            return
        await respond_json(send, 202, stored, {})

    @staticmethod
    def _plain(
        scope: Scope, body: bytes, uid: str, session_id: str, admin_token: str
    ) -> tuple[list[SegmentIn], str | None] | None:
        """The segments and the user token's hash (None for the admin token), or None when
        the request is anything but the plain case."""
        authorization, content_type = first_headers(scope, b"authorization", b"content-type")
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if media_type != "application/json" or not body:
            return None
        if not SESSION_RE.match(session_id) or text_problem(uid, line=True):
            return None
        try:
            credential = auth.read(authorization, auth.USER, admin_token=admin_token)
            segments = SegmentsIn.model_validate_json(body).segments
            return segments, None if isinstance(credential, auth.Admin) else credential.hash
        except (NudgeError, ValidationError):
            return None


@router.post(
    SEGMENTS_PATH,
    status_code=202,
    dependencies=[UserDep],
    summary="Add live transcript segments to a session (created on first use)",
    response_model=SegmentsAccepted,
)
async def post_segments(
    uid: str, session_id: str, body: SegmentsIn, platform: PlatformDep
) -> dict[str, Any]:
    return await store_segments(platform, uid, session_id, body.segments)


@router.post(
    "/v1/users/{uid}/sessions/{session_id}/finish",
    dependencies=[UserDep],
    summary="End the session's live conversation: last segments and memory_creation webhooks "
    "go out; the next segment starts a new conversation",
    response_model=SessionConversation,
)
async def finish(
    uid: str,
    session_id: str,
    platform: PlatformDep,
    body: Annotated[FinishIn | None, Body()] = None,
) -> dict[str, Any]:
    summary = body or FinishIn()
    result: dict[str, Any] = await platform.db.write(
        lambda conn: ingest.finish_conversation(conn, uid, session_id, summary)
    )
    if platform.dispatcher is not None:
        platform.dispatcher.wake(result["id"])
    return result


@router.get(
    "/v1/users/{uid}/sessions/{session_id}",
    dependencies=[UserDep],
    summary="The session's live (or else latest) conversation, in Omi's shape",
    response_model=SessionConversation,
)
async def get_session(uid: str, session_id: str, platform: PlatformDep) -> dict[str, Any]:
    return await platform.db.query(
        partial(ingest.session_conversation, uid=uid, session_id=session_id)
    )


def _parse_ws_message(raw: str) -> list[SegmentIn]:
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
    """Live segments over a WebSocket (docs/proactive.md): each text message answered with what
    was stored or ``{"error", "status"}``; a dropped connection can reconnect and continue."""
    platform: Platform = websocket.app.state.platform
    await websocket.accept()
    token = websocket.query_params.get("token")
    authorization = websocket.headers.get("authorization") or (f"Bearer {token}" if token else None)
    try:
        check_text(uid, "uid", line=True)
        check_session_id(session_id)
        await auth.caller(
            platform.db, authorization, auth.USER, admin_token=platform.admin_token, uid=uid
        )
    except NudgeError as exc:
        await websocket.send_json(answer := socket_error(exc, websocket.url.path))
        await websocket.close(code=1008, reason=answer["error"][:120])
        return
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                await websocket.send_json({"error": BINARY_REFUSED, "status": 422})
                continue
            try:
                segments = _parse_ws_message(raw)
                await websocket.send_json(await store_segments(platform, uid, session_id, segments))
            except (NudgeError, ValidationError) as exc:
                await websocket.send_json(socket_error(exc, websocket.url.path))
            except ValueError as exc:
                await websocket.send_json({"error": f"bad message: {exc}", "status": 422})
    except WebSocketDisconnect:
        return


@router.get(
    "/v1/apps/{app_id}/traces",
    dependencies=[DeveloperDep],
    summary="What happened on each webhook call to this app, newest first",
    response_model=TracePage,
)
async def list_traces(
    app_id: str,
    platform: PlatformDep,
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, max_length=100),
    session_id: str | None = Query(None, max_length=128),
    conversation_id: str | None = Query(None, max_length=128),
    uid: str | None = Query(None, max_length=128),
) -> dict[str, Any]:
    def read(conn: Connection) -> dict[str, Any]:
        app = get_app(conn, app_id)
        filters = {"session_id": session_id, "conversation_id": conversation_id, "uid": uid}
        page = traces.list_traces(conn, app_id, limit=limit, cursor=cursor, **filters)
        page["app"] = {
            "status": app.status,
            "status_reason": app.status_reason,
            "webhook_failing_since": webhook_failing_since(conn, app_id),
        }
        return page

    return await platform.db.query(read)


@router.get(
    "/v1/apps/{app_id}/traces/{trace_id}",
    dependencies=[DeveloperDep],
    summary="One trace",
    response_model=Trace,
)
async def get_trace(app_id: str, trace_id: str, platform: PlatformDep) -> dict[str, Any]:
    return await platform.db.query(partial(traces.get_trace, app_id=app_id, trace_id=trace_id))


@router.post(
    "/v1/apps/{app_id}/enable",
    dependencies=[AdminDep],
    summary="Re-enable an app that was disabled because its webhook kept failing",
    response_model=AppInfo,
)
async def enable_app(app_id: str, platform: PlatformDep) -> dict[str, Any]:
    def work(conn: Connection) -> AppRecord:
        get_app(conn, app_id)  # 404 before anything is written
        enable(conn, app_id)
        return get_app(conn, app_id)

    app = await platform.db.write(work)
    if platform.webhooks is not None:
        platform.webhooks.breakers.pop(app_id, None)
    return app.public()
