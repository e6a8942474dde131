"""Request dependencies: the platform, and who is calling."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from nudge.core.apps import is_admin_token, parse_bearer
from nudge.core.errors import Unauthorized
from nudge.core.users import authenticate_user
from nudge.platform import Platform


async def get_platform(request: Request) -> Platform:
    # async on purpose: FastAPI runs a plain ``def`` dependency in a thread pool, per request.
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


async def require_admin(
    platform: PlatformDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    token = parse_bearer(authorization)
    if not is_admin_token(token, platform.admin_token):
        raise Unauthorized("this call needs the admin token (NUDGE_ADMIN_TOKEN)")


async def require_user(
    uid: str, platform: PlatformDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """The admin token, or the token of the user named in the path."""
    async with platform.db.read() as conn:
        await authenticate_user(conn, authorization, uid, platform.admin_token)


AdminDep = Depends(require_admin)
UserDep = Depends(require_user)
