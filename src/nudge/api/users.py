"""Users, facts, installs, devices, the inbox and the app chat (contract.md §5)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query, Request
from sse_starlette.sse import EventSourceResponse

from nudge.api.deps import AdminDep, PlatformDep, UserDep
from nudge.core import notifications, users
from nudge.core.apps import get_app
from nudge.net.guard import HostAllowList
from nudge.text import json_text

router = APIRouter(prefix="/v1/users", tags=["users"])


@router.post("", status_code=201, dependencies=[AdminDep], summary="Create a user")
async def create_user(body: users.NewUser, platform: PlatformDep) -> dict[str, str]:
    async with platform.db.begin() as conn:
        return await users.create_user(conn, body)


@router.get("/{uid}", dependencies=[UserDep], summary="A user, with installs")
async def get_user(uid: str, platform: PlatformDep) -> dict[str, Any]:
    async with platform.db.read() as conn:
        row = await users.get_user(conn, uid)
        return {"uid": row.uid, "name": row.name, "apps": await users.list_installs(conn, uid)}


@router.post("/{uid}/facts", dependencies=[UserDep], summary="Add facts about the user")
async def add_facts(uid: str, body: users.NewFacts, platform: PlatformDep) -> dict[str, Any]:
    async with platform.db.begin() as conn:
        return {"facts": await users.add_facts(conn, uid, body.facts)}


@router.get("/{uid}/facts", dependencies=[UserDep], summary="The user's facts")
async def list_facts(uid: str, platform: PlatformDep) -> dict[str, Any]:
    async with platform.db.read() as conn:
        return {"facts": await users.list_facts(conn, uid)}


@router.post(
    "/{uid}/apps/{app_id}", dependencies=[UserDep], summary="Install an app, granting scopes"
)
async def install(
    uid: str, app_id: str, body: users.NewInstall, platform: PlatformDep
) -> dict[str, Any]:
    async with platform.db.read() as conn:
        await users.get_user(conn, uid)
        app = await get_app(conn, app_id)
    integration = app.manifest.external_integration
    if integration and integration.setup_completed_url and platform.webhooks is not None:
        await users.check_setup_completed(
            platform.webhooks, app, integration.setup_completed_url, uid
        )
    async with platform.db.begin() as conn:
        installed = await users.install_app(conn, uid, app_id, body.scopes)
    if integration:
        installed["auth_steps"] = [
            {"name": s.name, "url": _with_uid(s.url, uid)} for s in integration.auth_steps
        ]
    return installed


def _with_uid(url: str, uid: str) -> str:
    from urllib.parse import urlencode

    return f"{url}{'&' if '?' in url else '?'}{urlencode({'uid': uid})}"


@router.delete(
    "/{uid}/apps/{app_id}", status_code=204, dependencies=[UserDep], summary="Uninstall an app"
)
async def uninstall(uid: str, app_id: str, platform: PlatformDep) -> None:
    async with platform.db.begin() as conn:
        await users.uninstall_app(conn, uid, app_id)


@router.post(
    "/{uid}/devices",
    status_code=201,
    dependencies=[UserDep],
    summary="Register a device (FCM/APNs token or Web Push subscription)",
)
async def add_device(uid: str, body: users.NewDevice, platform: PlatformDep) -> dict[str, Any]:
    async with platform.db.begin() as conn:
        return await users.add_device(
            conn,
            uid,
            body,
            webpush_hosts=HostAllowList.parse(platform.settings.webpush_allowed_hosts),
        )


@router.get("/{uid}/devices", dependencies=[UserDep], summary="The user's devices")
async def list_devices(uid: str, platform: PlatformDep) -> list[dict[str, Any]]:
    async with platform.db.read() as conn:
        return await users.list_devices(conn, uid)


@router.delete(
    "/{uid}/devices/{device_id}", status_code=204, dependencies=[UserDep], summary="Remove a device"
)
async def delete_device(uid: str, device_id: str, platform: PlatformDep) -> None:
    async with platform.db.begin() as conn:
        await users.delete_device(conn, uid, device_id)


@router.get("/{uid}/notifications", dependencies=[UserDep], summary="The inbox, newest first")
async def list_notifications(
    uid: str,
    platform: PlatformDep,
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, max_length=100),
) -> dict[str, Any]:
    async with platform.db.read() as conn:
        await users.get_user(conn, uid)
        return await conn.run_sync(
            notifications.list_notifications, uid, limit=limit, cursor=cursor
        )


@router.get(
    "/{uid}/notifications/stream",
    dependencies=[UserDep],
    summary="The inbox live, as Server-Sent Events",
)
async def stream_notifications(uid: str, request: Request, platform: PlatformDep) -> Any:
    async with platform.db.read() as conn:
        await users.get_user(conn, uid)

    async def events() -> Any:
        async with platform.bus.subscribe(uid) as queue:
            yield {"event": "ready", "data": "{}"}
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    continue
                yield {
                    "event": "notification",
                    "id": event.get("id", ""),
                    "data": json_text(event),
                }

    return EventSourceResponse(events(), ping=15)


@router.post(
    "/{uid}/notifications/{notification_id}/read",
    dependencies=[UserDep],
    summary="Mark a notification read",
)
async def mark_read(uid: str, notification_id: str, platform: PlatformDep) -> dict[str, str]:
    async with platform.db.begin() as conn:
        await conn.run_sync(notifications.mark_read, uid, notification_id)
    return {"status": "ok"}


@router.get(
    "/{uid}/apps/{app_id}/messages",
    dependencies=[UserDep],
    summary="The chat between the user and an app",
)
async def app_messages(
    uid: str, app_id: str, platform: PlatformDep, limit: int = Query(50, ge=1, le=500)
) -> dict[str, Any]:
    async with platform.db.read() as conn:
        await users.get_user(conn, uid)
        chat = await conn.run_sync(notifications.chat_messages, uid, app_id, limit=limit)
        return {"messages": chat}
