"""The public app API (DESIGN section 1), Omi-compatible."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import unquote_to_bytes

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from nudge.api.deps import PlatformDep
from nudge.core.apps import authenticate_app
from nudge.core.direct import DirectSend, send_direct, with_rate_headers
from nudge.core.errors import Invalid, NudgeError
from nudge.core.notifications import notification_status
from nudge.platform import Platform

router = APIRouter(tags=["app API"])


def strict_query(request: Request) -> dict[str, str]:
    """Query parameters decoded as strict UTF-8 (a bad encoding is a 422, not a U+FFFD)."""
    params: dict[str, str] = {}
    raw = request.scope.get("query_string", b"")
    for pair in raw.split(b"&"):
        if not pair:
            continue
        key, _, value = pair.partition(b"=")
        try:
            name = unquote_to_bytes(key.replace(b"+", b" ")).decode("utf-8")
            text = unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid(
                f"{key.decode('latin-1')}: not valid UTF-8; percent-encode the text as UTF-8"
            ) from None
        params.setdefault(name, text)
    return params


def _ok(accepted_body: dict[str, object], headers: dict[str, str]) -> JSONResponse:
    return JSONResponse(accepted_body, headers=headers)


# The hottest route: it reads its inputs from the request itself instead of through FastAPI's
# per-parameter dependency machinery (a measurable share of each request); the parameters are
# declared for the OpenAPI document below.
_DIRECT_PARAMETERS = [
    {
        "name": "uid",
        "in": "query",
        "required": True,
        "schema": {"type": "string"},
        "description": "The target user's id",
    },
    {
        "name": "message",
        "in": "query",
        "required": True,
        "schema": {"type": "string"},
        "description": "The notification text (at most 2,000 characters by default)",
    },
    {
        "name": "Authorization",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": "Bearer <app secret>",
    },
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "A repeat with the same key returns the first result",
    },
]


@router.post(
    "/v2/integrations/{app_id}/notification",
    summary="Send a direct notification (Omi-compatible)",
    responses={401: {}, 404: {}, 422: {}, 429: {}},
    openapi_extra={"parameters": _DIRECT_PARAMETERS},
)
async def send_notification(app_id: str, request: Request) -> JSONResponse:
    platform: Platform = request.app.state.platform
    uid: str | None = None
    try:
        params = strict_query(request)
        uid = params.get("uid")
        accepted, rate = await send_direct(
            platform,
            DirectSend(
                authorization=request.headers.get("authorization"),
                app_id=app_id,
                uid=uid,
                message=params.get("message"),
                idempotency_key=request.headers.get("idempotency-key"),
            ),
        )
    except NudgeError as exc:
        platform.metrics.rejected.labels(str(exc.status_code)).inc()
        raise await with_rate_headers(platform, exc, app_id, uid) from None
    return _ok(accepted.body(), rate.headers())


class SendBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=128)
    type: str = Field(default="", max_length=64)
    message: str
    data: dict[str, str] = Field(default_factory=dict, max_length=20)


@router.post(
    "/api/notifications/send",
    summary="Send a notification with a type and data (seed guide, step 2)",
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
            ),
        )
    except NudgeError as exc:
        platform.metrics.rejected.labels(str(exc.status_code)).inc()
        raise await with_rate_headers(platform, exc, None, body.user_id) from None
    return _ok(accepted.body(), rate.headers())


@router.get(
    "/v2/integrations/{app_id}/notifications/{notification_id}",
    summary="A notification and the state of each of its deliveries",
)
async def get_status(
    app_id: str,
    notification_id: str,
    platform: PlatformDep,
    authorization: Annotated[str | None, Header()] = None,
) -> dict[str, object]:
    async with platform.db.read() as conn:
        await authenticate_app(conn, authorization, app_id)
        return await notification_status(conn, app_id, notification_id)
