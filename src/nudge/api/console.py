"""The web console at ``/console`` (see ``nudge.console``): its files and two small calls."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import FileResponse

from nudge import auth, console
from nudge.api.deps import AdminDep, PlatformDep, UserDep
from nudge.errors import NotFound
from nudge.sdk.models import ConsoleUsers, Knowledge, WhoAmI
from nudge.store import accounts

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
    known = await platform.db.query(partial(console.user_knowledge, uid=uid, limit=limit))
    return Knowledge.model_validate(known)
