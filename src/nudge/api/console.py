"""The web console at ``/console`` (see ``nudge.console``): its files and two small calls."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import FileResponse

from nudge import console
from nudge.api.deps import AdminDep, PlatformDep, UserDep
from nudge.core.users import get_user
from nudge.errors import NotFound
from nudge.sdk.models import ConsoleUsers, Knowledge, WhoAmI

router = APIRouter(tags=["console"])

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
    return FileResponse(console.STATIC / "index.html", headers=PAGE_HEADERS)


@router.get("/console/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    path = console.static_file(name)
    if path is None:
        raise NotFound(f"no console file {name!r}")
    return FileResponse(
        path,
        media_type=console.MEDIA_TYPES[path.suffix],
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
    async with platform.db.read() as conn:
        return await console.whoami(conn, authorization, platform.admin_token)


@router.get(
    "/console/api/users",
    dependencies=[AdminDep],
    summary="Users, newest first",
    response_model=ConsoleUsers,
)
async def users(platform: PlatformDep, limit: int = Query(200, ge=1, le=1000)) -> dict[str, Any]:
    async with platform.db.read() as conn:
        return {"users": await console.list_users(conn, limit)}


@router.get(
    "/console/api/users/{uid}/knowledge",
    dependencies=[UserDep],
    summary="The user's newest facts and conversations (the console's user view)",
)
async def knowledge(
    uid: str, platform: PlatformDep, limit: int = Query(50, ge=1, le=200)
) -> Knowledge:
    async with platform.db.read() as conn:
        await get_user(conn, uid)
        return Knowledge.model_validate(await console.user_knowledge(conn, uid, limit))
