"""The web console at ``/console`` (its pages are in ``nudge/console/static``): files and calls."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import FileResponse
from sqlalchemy import Connection

from nudge import auth
from nudge.api.deps import AdminDep, PlatformDep, UserDep
from nudge.core.users import get_user
from nudge.errors import NotFound
from nudge.sdk.models import ConsoleUsers, Knowledge, WhoAmI
from nudge.store import accounts

router = APIRouter(tags=["console"])
STATIC = Path(__file__).parents[1] / "console" / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

# The page holds a token: no inline code, no framing, no referrer, no caching.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@router.get("/console", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


@router.get("/console/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    path = STATIC / name  # a bare name of a known type only
    if "/" in name or "\\" in name or path.suffix not in MEDIA_TYPES or not path.is_file():
        raise NotFound(f"no console file {name!r}")
    return FileResponse(
        path,
        media_type=MEDIA_TYPES[path.suffix],
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )


@router.get(
    "/console/api/whoami",
    summary="Who a token belongs to (admin, a user or an app)",
    response_model=WhoAmI,
    response_model_exclude_unset=True,
)
async def whoami(
    platform: PlatformDep, authorization: Annotated[str | None, Header()] = None
) -> dict[str, Any]:
    """``{"role": "admin"}``, ``{"role": "user", "uid", "name"}`` or ``{"role": "app", ...}``."""
    who = await auth.caller(platform.db, authorization, admin_token=platform.admin_token)
    if isinstance(who, auth.User):
        return {"role": "user", "uid": who.uid, "name": who.name}
    if isinstance(who, auth.App):
        return {"role": "app", "app_id": who.app_id}
    return {"role": "admin"}


@router.get(
    "/console/api/users",
    dependencies=[AdminDep],
    summary="Users, newest first",
    response_model=ConsoleUsers,
)
async def users(platform: PlatformDep, limit: int = Query(200, ge=1, le=1000)) -> dict[str, Any]:
    return {"users": await platform.db.query(partial(accounts.users, limit=limit))}


@router.get(
    "/console/api/users/{uid}/knowledge",
    dependencies=[UserDep],
    summary="The user's newest facts and conversations (the console's user view)",
)
async def knowledge(
    uid: str, platform: PlatformDep, limit: int = Query(50, ge=1, le=200)
) -> Knowledge:
    def read(conn: Connection) -> dict[str, Any]:
        get_user(conn, uid)
        return accounts.knowledge(conn, uid, limit)

    return Knowledge.model_validate(await platform.db.query(read))
