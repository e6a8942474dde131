"""Request dependencies: the platform, who is calling, and text that must not come in."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.requests import HTTPConnection

from nudge import auth
from nudge.errors import Invalid
from nudge.platform import Platform
from nudge.text import check_text, json_problem


async def get_platform(request: Request) -> Platform:
    # async on purpose: FastAPI runs a plain ``def`` dependency in a thread pool, per request.
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


async def check_text_input(connection: HTTPConnection) -> None:
    """Every route's path parameters (ids: one line of text), query parameters and JSON body (no
    NUL, no lone surrogate anywhere), before anything is looked up with them (see ``nudge.text``;
    one-line body fields are also checked by their types). The WebSocket endpoint checks its own,
    to answer on the socket."""
    if connection.scope["type"] != "http":
        return
    for name, value in connection.path_params.items():
        check_text(value, name, line=True)
    for name, value in connection.query_params.multi_items():
        check_text(name, "query parameter name")
        check_text(value, name)
    # FastAPI has already parsed a JSON body (Request.json() caches it) for routes that take one;
    # for the others this reads it (bounded by the request guard). Malformed JSON is FastAPI's 422.
    if not isinstance(connection, Request) or "json" not in connection.headers.get(
        "content-type", ""
    ):
        return
    try:
        body = await connection.json()
    except ValueError:
        return
    if body is not None:
        problem = json_problem(body)
        if problem is not None:
            raise Invalid(problem if isinstance(body, dict | list) else f"body: {problem}")


async def require_admin(
    platform: PlatformDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    auth.read(authorization, auth.ADMIN, admin_token=platform.admin_token)


async def require_user(
    uid: str, platform: PlatformDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """The admin token, or the token of the user named in the path."""
    await auth.caller(
        platform.db, authorization, auth.USER, admin_token=platform.admin_token, uid=uid
    )


async def require_app_developer(
    app_id: str, platform: PlatformDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """The admin token, or a live app secret of this app."""
    await auth.caller(
        platform.db, authorization, auth.DEVELOPER, admin_token=platform.admin_token, app_id=app_id
    )


TextInputDep = Depends(check_text_input)
AdminDep = Depends(require_admin)
UserDep = Depends(require_user)
DeveloperDep = Depends(require_app_developer)
