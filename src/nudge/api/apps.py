"""Admin calls for apps and their keys (contract.md §5)."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from nudge.api.deps import AdminDep, PlatformDep
from nudge.core import apps
from nudge.core.manifest import Manifest
from nudge.sdk.models import AppCreated, AppInfo, KeyCreated, KeyInfo

router = APIRouter(prefix="/v1/apps", tags=["apps"], dependencies=[AdminDep])


class NewApp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    manifest: Manifest
    direct_limit_per_hour: int | None = Field(default=None, ge=1, le=1_000_000)


@router.post(
    "",
    status_code=201,
    summary="Register an app; its secrets are shown only here",
    response_model=AppCreated,
)
async def create_app(body: NewApp, platform: PlatformDep) -> dict[str, str]:
    return await platform.db.write(
        partial(
            apps.create_app,
            manifest=body.manifest,
            direct_limit_per_hour=body.direct_limit_per_hour,
        )
    )


@router.get("", summary="List apps", response_model=list[AppInfo])
async def list_apps(platform: PlatformDep) -> list[dict[str, Any]]:
    return [a.public() for a in await platform.db.query(apps.list_apps)]


@router.get("/{app_id}", summary="One app, with its status", response_model=AppInfo)
async def get_app(app_id: str, platform: PlatformDep) -> dict[str, Any]:
    return (await platform.db.query(partial(apps.get_app, app_id=app_id))).public()


@router.post(
    "/{app_id}/keys",
    status_code=201,
    summary="Create another app secret",
    response_model=KeyCreated,
)
async def create_key(app_id: str, platform: PlatformDep) -> dict[str, str]:
    return await platform.db.write(partial(apps.create_key, app_id=app_id))


@router.get(
    "/{app_id}/keys", summary="List the app's keys (hints only)", response_model=list[KeyInfo]
)
async def list_keys(app_id: str, platform: PlatformDep) -> list[dict[str, Any]]:
    return await platform.db.query(partial(apps.list_keys, app_id=app_id))


@router.delete("/{app_id}/keys/{key_id}", status_code=204, summary="Revoke a key")
async def revoke_key(app_id: str, key_id: str, platform: PlatformDep) -> None:
    await platform.db.write(partial(apps.revoke_key, app_id=app_id, key_id=key_id))
