"""Omi's integration API (contract.md §9): the routes; the work is in :mod:`nudge.integrations`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse

from nudge.api.deps import PlatformDep
from nudge.integrations import conversations, memories
from nudge.integrations.notification import NotificationV1, send_notification_v1
from nudge.sdk.models import (
    ConversationCreated,
    ConversationsResponse,
    MemoriesResponse,
    NotificationAccepted,
    SearchConversationsResponse,
)

router = APIRouter(tags=["integration API"])

Authorization = Annotated[str | None, Header(description="Bearer <app secret>")]
Uid = Annotated[str, Query(min_length=1, max_length=128, description="The user")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]  # a database takes 64-bit offsets at most
MaxSegments = Annotated[
    int, Query(ge=-1, le=1000, description="Segments per conversation at most; -1: all")
]

_CREATE: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or malformed Authorization header"},
    403: {"description": "Invalid key, app not enabled by the user, or action not in the manifest"},
    404: {"description": "Unknown app"},
    422: {"description": "A missing or invalid field"},
    429: {"description": "Hourly limit for this app and user reached; see Retry-After"},
}
_READ: dict[int | str, dict[str, Any]] = {c: text for c, text in _CREATE.items() if c != 429}


@router.post(
    "/v2/integrations/{app_id}/user/conversations",
    summary="Import a finished conversation (text or transcript segments)",
    responses=_CREATE,
    response_model_exclude_none=True,
)
async def create_conversation(
    app_id: str,
    uid: Uid,
    body: conversations.CreateConversation,
    platform: PlatformDep,
    response: Response,
    authorization: Authorization = None,
) -> ConversationCreated:
    item, rate = await conversations.import_conversation(platform, authorization, app_id, uid, body)
    response.headers.update(rate.headers())
    return ConversationCreated(conversation=item)


@router.get(
    "/v2/integrations/{app_id}/conversations",
    summary="The user's conversations, newest first",
    responses=_READ,
    response_model_exclude_none=True,
)
async def list_conversations(
    app_id: str,
    uid: Uid,
    platform: PlatformDep,
    limit: Limit = 100,
    offset: Offset = 0,
    include_discarded: bool = False,
    statuses: Annotated[list[str], Query(max_length=10)] = [],  # noqa: B006 (FastAPI copies it)
    start_date: Annotated[str | None, Query(max_length=40)] = None,
    end_date: Annotated[str | None, Query(max_length=40)] = None,
    max_transcript_segments: MaxSegments = 100,
    authorization: Authorization = None,
) -> ConversationsResponse:
    found = await conversations.read_conversations(
        platform,
        authorization,
        app_id,
        uid,
        start_date=start_date,
        end_date=end_date,
        limit=limit,
        offset=offset,
        statuses=statuses,
        include_discarded=include_discarded,
        max_segments=max_transcript_segments,
    )
    return ConversationsResponse(conversations=found)


@router.post(
    "/v2/integrations/{app_id}/search/conversations",
    summary="Full-text search of the user's conversations",
    responses=_READ,
    response_model_exclude_none=True,
)
async def search_conversations(
    app_id: str,
    uid: Uid,
    body: conversations.SearchRequest,
    platform: PlatformDep,
    max_transcript_segments: MaxSegments = 100,
    authorization: Authorization = None,
) -> SearchConversationsResponse:
    return await conversations.search_conversations(
        platform, authorization, app_id, uid, body, max_transcript_segments
    )


@router.post(
    "/v2/integrations/{app_id}/user/memories",
    summary="Import memories (facts about the user): explicit, or found in a text",
    responses=_CREATE,
)
@router.post(
    "/v2/integrations/{app_id}/user/facts",
    summary="Import memories (Omi's older name of the same endpoint)",
    responses=_CREATE,
)
async def create_memories(
    app_id: str,
    uid: Uid,
    body: memories.CreateMemories,
    platform: PlatformDep,
    response: Response,
    authorization: Authorization = None,
) -> MemoriesResponse:
    stored, rate = await memories.import_memories(platform, authorization, app_id, uid, body)
    response.headers.update(rate.headers())
    return MemoriesResponse(memories=stored)


@router.get(
    "/v2/integrations/{app_id}/memories",
    summary="The user's memories, newest first",
    responses=_READ,
    response_model_exclude_none=True,
)
async def list_memories(
    app_id: str,
    uid: Uid,
    platform: PlatformDep,
    limit: Limit = 100,
    offset: Offset = 0,
    authorization: Authorization = None,
) -> MemoriesResponse:
    found = await memories.read_memories(platform, authorization, app_id, uid, limit, offset)
    return MemoriesResponse(memories=found)


@router.post(
    "/v1/integrations/notification",
    summary="Send a notification (Omi's older direct endpoint: aid, uid, message in the body)",
    response_model=NotificationAccepted,
    response_model_exclude_none=True,
    responses=_CREATE,
)
async def notification_v1(
    body: NotificationV1,
    platform: PlatformDep,
    authorization: Authorization = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    accepted, rate = await send_notification_v1(platform, authorization, idempotency_key, body)
    return JSONResponse(accepted.body(), headers=rate.headers())
