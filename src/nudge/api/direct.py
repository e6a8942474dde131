"""The public app API (contract.md §1), Omi-compatible.

The Omi direct route, ``POST /v2/integrations/{app_id}/notification``, is served ahead of the
router by :mod:`nudge.api.direct_route`."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from nudge import auth
from nudge.api.deps import PlatformDep
from nudge.core.direct import DirectSend, cancel_notification, refusal, send_direct
from nudge.core.notifications import notification_status
from nudge.errors import Invalid, NudgeError
from nudge.sdk.models import PRIORITIES, TTL_MAX_S, NotificationAccepted, NotificationStatus
from nudge.text import Line, Text

router = APIRouter(tags=["app API"])


class SendBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Line = Field(min_length=1, max_length=128)
    type: Line = Field(default="", max_length=64)
    message: str  # checked by send_direct, as the direct route's
    data: dict[Line, Text] = Field(default_factory=dict, max_length=20)
    # Checked by send_direct, as the direct route's query parameters (docs/api.md).
    priority: str | None = Field(
        default=None, json_schema_extra={"enum": list(PRIORITIES)}, description="default normal"
    )
    ttl: StrictInt | None = Field(
        default=None, ge=1, le=TTL_MAX_S, description="seconds from when it is due until it expires"
    )
    send_at: str | None = Field(
        default=None, description="ISO 8601 with offset, at most 30 days ahead; past: now"
    )


@router.post(
    "/api/notifications/send",
    summary="Send a notification with a type and data (seed guide, step 2)",
    response_model=NotificationAccepted,
    responses={401: {}, 404: {}, 422: {}, 429: {}},
)
async def send_typed(
    body: SendBody,
    platform: PlatformDep,
    authorization: Annotated[str | None, Header()] = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    try:
        for key, value in body.data.items():
            if len(key) > 64 or len(value) > 1024:
                raise Invalid("data: keys up to 64 and values up to 1024 characters")
        accepted, rate = await send_direct(
            platform,
            DirectSend(
                authorization=authorization,
                app_id=None,
                uid=body.user_id,
                message=body.message,
                type=body.type,
                data=body.data,
                idempotency_key=idempotency_key,
                priority=body.priority,
                ttl=body.ttl,
                send_at=body.send_at,
            ),
        )
    except NudgeError as exc:
        raise await refusal(platform, exc, None, body.user_id) from None
    return JSONResponse(accepted.body(), headers=rate.headers())


@router.get(
    "/v2/integrations/{app_id}/notifications/{notification_id}",
    summary="A notification and the state of each of its deliveries",
    response_model=NotificationStatus,
)
async def get_status(
    app_id: str,
    notification_id: str,
    platform: PlatformDep,
    authorization: Annotated[str | None, Header()] = None,
) -> dict[str, object]:
    await auth.caller(platform.db, authorization, auth.APP, app_id=app_id)
    status = partial(notification_status, app_id=app_id, notification_id=notification_id)
    return await platform.db.query(status)


@router.delete(
    "/v2/integrations/{app_id}/notifications/{notification_id}",
    summary="Cancel what of a notification has not gone yet (scheduled, held, queued)",
    response_model=NotificationStatus,
    responses={404: {}, 409: {"description": "Nothing left to cancel: it has gone"}},
)
async def cancel(
    app_id: str,
    notification_id: str,
    platform: PlatformDep,
    authorization: Annotated[str | None, Header()] = None,
) -> dict[str, object]:
    await auth.caller(platform.db, authorization, auth.APP, app_id=app_id)
    work = partial(cancel_notification, app_id=app_id, notification_id=notification_id)
    return await platform.db.write(work)
