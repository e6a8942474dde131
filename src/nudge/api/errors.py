"""Every error is JSON ``{"detail": "..."}`` that says what to fix; nothing leaks a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from nudge.api.asgi import SafeJSONResponse, respond_json
from nudge.errors import NudgeError
from nudge.sdk.errors import describe_validation

log = logging.getLogger("nudge.api")


# What a request gets while the database is unreachable: a 503 the client can retry.
DATABASE_UNAVAILABLE: tuple[int, dict[str, str], dict[str, str]] = (
    503,
    {"detail": "the database is unavailable right now; retry shortly"},
    {"Retry-After": "1"},
)


def is_database_outage(exc: DBAPIError, path: str) -> bool:
    """A lost connection or an operational error (logged here), not a bug in a statement."""
    if not (exc.connection_invalidated or isinstance(exc, OperationalError)):
        return False
    log.warning("database unavailable", extra={"path": path, "error": str(exc.orig)})
    return True


async def respond_database_outage(send: Send, exc: DBAPIError, path: str) -> None:
    """For the plain-ASGI routes: a database outage answers 503; anything else is re-raised
    (ServerErrorMiddleware logs it and answers 500)."""
    if not is_database_outage(exc, path):
        raise exc
    await respond_json(send, *DATABASE_UNAVAILABLE)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NudgeError)
    async def _nudge_error(_: Request, exc: NudgeError) -> SafeJSONResponse:
        return SafeJSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> SafeJSONResponse:
        detail = describe_validation(list(exc.errors()))
        headers: dict[str, str] = {}
        if request.url.path == "/api/notifications/send":
            # Every answer of the app API carries the rate-limit headers, even a malformed body.
            from nudge.core.direct import current_rate_limit

            rate = await current_rate_limit(request.app.state.platform, None, None)
            headers = rate.headers()
        return SafeJSONResponse({"detail": detail}, status_code=422, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> SafeJSONResponse:
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            # FastAPI answers an undecodable body with 400; contract.md puts bad encoding under 422.
            return SafeJSONResponse(
                {"detail": "body: not valid JSON in UTF-8; send a JSON object"}, status_code=422
            )
        return SafeJSONResponse(
            {"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> SafeJSONResponse:
        if not is_database_outage(exc, request.url.path):
            return await _unexpected(request, exc)
        status, content, headers = DATABASE_UNAVAILABLE
        return SafeJSONResponse(content, status_code=status, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> SafeJSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return SafeJSONResponse(
            {"detail": "internal error; it has been logged. Retry with backoff."}, status_code=500
        )
