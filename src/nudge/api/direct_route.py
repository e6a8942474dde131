"""``POST /v2/integrations/{app_id}/notification`` served as plain ASGI, ahead of FastAPI's router.

The hottest route (every direct notification) is answered here with two ASGI messages, without
the framework's middleware stack, router and endpoint machinery (docs/performance.md). What it
does is :func:`nudge.core.direct.send_direct`, shared with the typed route;
:func:`add_openapi_entry` puts it in the OpenAPI document.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.routing import get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from nudge.api.asgi import first_headers, respond_json
from nudge.api.errors import respond_error
from nudge.core.direct import DirectSend, refusal, send_direct
from nudge.errors import Invalid, NudgeError
from nudge.platform import Platform
from nudge.sdk.models import PRIORITIES, TTL_MAX_S

PATH = "/v2/integrations/{app_id}/notification"
_PATH_RE = re.compile(r"/v2/integrations/([^/]+)/notification")


def strict_query(raw: bytes) -> dict[str, str]:
    """Query parameters decoded as strict UTF-8 (a bad encoding is a 422, not a U+FFFD).

    The first of repeated parameters wins, as in Starlette."""
    params: dict[str, str] = {}
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


class DirectNotificationRoute:
    """ASGI middleware that answers the direct-notification path and passes on the rest."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            match = _PATH_RE.fullmatch(get_route_path(scope))
            if match is not None:
                await self._handle(scope, send, match[1])
                return
        await self.app(scope, receive, send)

    async def _handle(self, scope: Scope, send: Send, app_id: str) -> None:
        if scope["method"] != "POST":
            await respond_error(send, HTTPException(405, headers={"Allow": "POST"}), PATH)
            return
        platform: Platform = scope["app"].state.platform
        authorization, idempotency_key = first_headers(scope, b"authorization", b"idempotency-key")
        uid: str | None = None
        try:
            params = strict_query(scope["query_string"])
            uid = params.get("uid")
            accepted, rate = await send_direct(
                platform,
                DirectSend(
                    authorization=authorization,
                    app_id=app_id,
                    uid=uid,
                    message=params.get("message"),
                    idempotency_key=idempotency_key,
                    priority=params.get("priority"),
                    ttl=params.get("ttl"),
                    send_at=params.get("send_at"),
                ),
            )
        except Exception as exc:
            if isinstance(exc, NudgeError):
                exc = await refusal(platform, exc, app_id, uid)
            await respond_error(send, exc, PATH)
            return
        await respond_json(send, 200, accepted.body(), rate.headers())


def _parameter(
    name: str,
    where: str,
    description: str,
    required: bool = True,
    schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required,
        "schema": schema or {"type": "string"},
        "description": description,
    }


_PARAMETERS = [
    _parameter("app_id", "path", "The app's id"),
    _parameter("uid", "query", "The target user's id"),
    _parameter("message", "query", "The notification text (at most 2,000 characters by default)"),
    _parameter(
        "priority",
        "query",
        "low, normal (the default) or high: the push services' priority, and high goes first",
        False,
        {"type": "string", "enum": list(PRIORITIES)},
    ),
    _parameter(
        "ttl",
        "query",
        "Seconds from when it is due until it expires (not sent after that)",
        False,
        {"type": "integer", "minimum": 1, "maximum": TTL_MAX_S},
    ),
    _parameter(
        "send_at",
        "query",
        "When to send it: ISO 8601 with its offset (Z or %2BHH:MM), at most 30 days ahead; "
        "a past time is now",
        False,
        {"type": "string", "format": "date-time"},
    ),
    _parameter("Authorization", "header", "Bearer <app secret>"),
    _parameter(
        "Idempotency-Key", "header", "A repeat with the same key returns the first result", False
    ),
]


def add_openapi_entry(app: FastAPI) -> None:
    """Describe the route in ``/openapi.json`` (FastAPI only documents its own routes)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema["paths"][PATH] = {
                "post": {
                    "tags": ["app API"],
                    "summary": "Send a direct notification (Omi-compatible)",
                    "operationId": "send_notification",
                    "parameters": _PARAMETERS,
                    "responses": {
                        "200": {
                            "description": "Accepted: queued for the inbox and each device",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/NotificationAccepted"}
                                }
                            },
                        },
                        **{
                            str(code): {"description": text}
                            for code, text in (
                                (401, "Missing, malformed, unknown or other app's secret"),
                                (404, "Unknown app or user, or the app is not installed"),
                                (422, "A missing or invalid field"),
                                (429, "Hourly limit reached; see Retry-After"),
                                (503, "The database is unavailable; retry shortly"),
                            )
                        },
                    },
                }
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
