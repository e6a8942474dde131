"""Every error is JSON ``{"detail": "..."}`` that says what to fix; nothing leaks a traceback."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from nudge.api.asgi import SafeJSONResponse, respond_json
from nudge.errors import NudgeError
from nudge.sdk.errors import describe_validation

log = logging.getLogger("nudge.api")


DATABASE_UNAVAILABLE = "the database is unavailable right now; retry shortly"
INTERNAL_ERROR = "internal error; it has been logged. Retry with backoff."


class TooLarge(NudgeError):
    status_code = 413


class TooLong(NudgeError):
    status_code = 414


def error_response(exc: Exception, path: str = "") -> tuple[int, dict[str, str], dict[str, str]]:
    """The status, JSON body and headers that answer ``exc`` on every surface: the routes, the
    plain-ASGI routes, the request guard and the WebSocket. A database outage (a lost connection
    or an operational error) is a 503 the client can retry; anything unexpected is logged here
    and a 500."""
    if isinstance(exc, NudgeError):
        return exc.status_code, {"detail": exc.detail}, exc.headers
    if isinstance(exc, RequestValidationError | ValidationError):
        return 422, {"detail": describe_validation(list(exc.errors()))}, {}
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            # FastAPI answers an undecodable body with 400; contract.md puts bad encoding under 422.
            return 422, {"detail": "body: not valid JSON in UTF-8; send a JSON object"}, {}
        return exc.status_code, {"detail": str(exc.detail)}, dict(exc.headers or {})
    if isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, OperationalError)
    ):
        log.warning("database unavailable", extra={"path": path, "error": str(exc.orig)})
        return 503, {"detail": DATABASE_UNAVAILABLE}, {"Retry-After": "1"}
    log.error("unhandled error", exc_info=exc, extra={"path": path})
    return 500, {"detail": INTERNAL_ERROR}, {}


async def respond_error(send: Send, exc: Exception, path: str = "") -> None:
    """Answer ``exc`` as :func:`error_response` says, from plain ASGI."""
    await respond_json(send, *error_response(exc, path))


def socket_error(exc: Exception, path: str) -> dict[str, Any]:
    """The WebSocket's answer to ``exc``: ``{"error", "status"}``."""
    status, content, _ = error_response(exc, path)
    return {"error": content["detail"], "status": status}


def install_error_handlers(app: FastAPI) -> None:
    async def answer(request: Request, exc: Exception) -> SafeJSONResponse:
        status, content, headers = error_response(exc, request.url.path)
        if (
            isinstance(exc, RequestValidationError)
            and request.url.path == "/api/notifications/send"
        ):
            # Every answer of the app API carries the rate-limit headers, even a malformed body.
            from nudge.core.direct import current_rate_limit

            rate = await current_rate_limit(request.app.state.platform, None, None)
            headers = rate.headers()
        return SafeJSONResponse(content, status_code=status, headers=headers)

    for kind in (NudgeError, RequestValidationError, StarletteHTTPException, DBAPIError, Exception):
        app.add_exception_handler(kind, answer)
