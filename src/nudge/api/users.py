"""Users, facts, installs, devices, the inbox and the app chat (contract.md §5)."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import Connection
from sse_starlette.sse import EventSourceResponse

from nudge.api.deps import AdminDep, PlatformDep, UserDep
from nudge.core import inbox, users
from nudge.core.apps import AppRecord, get_app
from nudge.net.guard import HostAllowList
from nudge.sdk.models import (
    Chat,
    DeviceAdded,
    DeviceInfo,
    Facts,
    Inbox,
    Installed,
    Notification,
    ReadAllResult,
    Status,
    UnreadCount,
    UserCreated,
    UserInfo,
)

router = APIRouter(prefix="/v1/users", tags=["users"])


@router.post(
    "",
    status_code=201,
    dependencies=[AdminDep],
    summary="Create a user",
    response_model=UserCreated,
)
async def create_user(body: users.NewUser, platform: PlatformDep) -> dict[str, str]:
    return await platform.db.write(partial(users.create_user, new=body))


@router.get(
    "/{uid}", dependencies=[UserDep], summary="A user, with installs", response_model=UserInfo
)
async def get_user(uid: str, platform: PlatformDep) -> dict[str, Any]:
    def work(conn: Connection) -> dict[str, Any]:
        row = users.get_user(conn, uid)
        return {"uid": row.uid, "name": row.name, "apps": users.list_installs(conn, uid)}

    return await platform.db.query(work)


@router.post(
    "/{uid}/facts",
    dependencies=[UserDep],
    summary="Add facts about the user",
    response_model=Facts,
)
async def add_facts(uid: str, body: users.NewFacts, platform: PlatformDep) -> dict[str, Any]:
    return {"facts": await platform.db.write(partial(users.add_facts, uid=uid, facts=body.facts))}


@router.get(
    "/{uid}/facts", dependencies=[UserDep], summary="The user's facts", response_model=Facts
)
async def list_facts(uid: str, platform: PlatformDep) -> dict[str, Any]:
    return {"facts": await platform.db.query(partial(users.list_facts, uid=uid))}


@router.post(
    "/{uid}/apps/{app_id}",
    dependencies=[UserDep],
    summary="Install an app, granting scopes",
    response_model=Installed,
    response_model_exclude_unset=True,  # auth_steps only for apps with an integration
)
async def install(
    uid: str, app_id: str, body: users.NewInstall, platform: PlatformDep
) -> dict[str, Any]:
    def check(conn: Connection) -> AppRecord:
        users.get_user(conn, uid)
        return get_app(conn, app_id)

    app = await platform.db.query(check)
    integration = app.manifest.external_integration
    if integration and integration.setup_completed_url and platform.webhooks is not None:
        await users.check_setup_completed(
            platform.webhooks, app, integration.setup_completed_url, uid
        )
    installed = await platform.db.write(
        partial(users.install_app, uid=uid, app_id=app_id, scopes=body.scopes)
    )
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
    await platform.db.write(partial(users.uninstall_app, uid=uid, app_id=app_id))


@router.post(
    "/{uid}/devices",
    status_code=201,
    dependencies=[UserDep],
    summary="Register a device (FCM/APNs token or Web Push subscription)",
    response_model=DeviceAdded,
)
async def add_device(uid: str, body: users.NewDevice, platform: PlatformDep) -> dict[str, Any]:
    hosts = HostAllowList.parse(platform.settings.webpush_allowed_hosts)
    return await platform.db.write(
        partial(users.add_device, uid=uid, new=body, webpush_hosts=hosts)
    )


@router.get(
    "/{uid}/devices",
    dependencies=[UserDep],
    summary="The user's devices",
    response_model=list[DeviceInfo],
)
async def list_devices(uid: str, platform: PlatformDep) -> list[dict[str, Any]]:
    return await platform.db.query(partial(users.list_devices, uid=uid))


@router.delete(
    "/{uid}/devices/{device_id}", status_code=204, dependencies=[UserDep], summary="Remove a device"
)
async def delete_device(uid: str, device_id: str, platform: PlatformDep) -> None:
    await platform.db.write(partial(users.delete_device, uid=uid, device_id=device_id))


@router.get(
    "/{uid}/notifications",
    dependencies=[UserDep],
    summary="The inbox, newest first (archived ones only with archived=true)",
    response_model=Inbox,
)
async def list_notifications(
    uid: str,
    platform: PlatformDep,
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, max_length=100),
    archived: bool = Query(False, description="Include archived notifications"),
) -> dict[str, Any]:
    def work(conn: Connection) -> dict[str, Any]:
        users.get_user(conn, uid)
        return inbox.list_inbox(conn, uid, limit=limit, cursor=cursor, archived=archived)

    return await platform.db.query(work)


@router.get(
    "/{uid}/notifications/stream",
    dependencies=[UserDep],
    summary="The inbox live, as Server-Sent Events (notification and state events)",
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def stream_notifications(uid: str, request: Request, platform: PlatformDep) -> Any:
    await platform.db.query(partial(users.get_user, uid=uid))

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
                yield inbox.stream_message(event)

    return EventSourceResponse(events(), ping=15)


@router.post(
    "/{uid}/notifications/{notification_id}/read",
    dependencies=[UserDep],
    summary="Mark a notification read",
    response_model=Status,
)
async def mark_read(uid: str, notification_id: str, platform: PlatformDep) -> dict[str, str]:
    await inbox.set_state(platform.db, platform.bus, uid, notification_id, {"read": True})
    return {"status": "ok"}


@router.get(
    "/{uid}/notifications/unread-count",
    dependencies=[UserDep],
    summary="How many notifications are neither read nor archived",
    response_model=UnreadCount,
)
async def unread_count(uid: str, platform: PlatformDep) -> dict[str, int]:
    def work(conn: Connection) -> dict[str, int]:
        users.get_user(conn, uid)
        return inbox.unread_count(conn, uid)

    return await platform.db.query(work)


@router.post(
    "/{uid}/notifications/read-all",
    dependencies=[UserDep],
    summary="Mark every unread notification read (optionally only up to one id)",
    response_model=ReadAllResult,
)
async def read_all(
    uid: str, platform: PlatformDep, body: inbox.ReadAll | None = None
) -> dict[str, int]:
    await platform.db.query(partial(users.get_user, uid=uid))
    up_to = body.up_to if body is not None else None
    return await inbox.read_all(platform.db, platform.bus, uid, up_to)


@router.patch(
    "/{uid}/notifications/{notification_id}",
    dependencies=[UserDep],
    summary="Set or clear a notification's read, seen and archived flags",
    response_model=Notification,
)
async def change_state(
    uid: str, notification_id: str, body: inbox.StateChange, platform: PlatformDep
) -> dict[str, Any]:
    return await inbox.set_state(platform.db, platform.bus, uid, notification_id, body.changes())


@router.get(
    "/{uid}/apps/{app_id}/messages",
    dependencies=[UserDep],
    summary="The chat between the user and an app",
    response_model=Chat,
)
async def app_messages(
    uid: str, app_id: str, platform: PlatformDep, limit: int = Query(50, ge=1, le=500)
) -> dict[str, Any]:
    chat = partial(users.chat_messages, uid=uid, app_id=app_id, limit=limit)
    return {"messages": await platform.db.query(chat)}
