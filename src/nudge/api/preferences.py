"""The user's preferences: ``GET``/``PUT /v1/users/{uid}/preferences`` (DESIGN §10)."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter

from nudge.api.deps import PlatformDep, UserDep
from nudge.core import preferences
from nudge.sdk.models import Preferences

router = APIRouter(prefix="/v1/users", tags=["users"])


@router.get(
    "/{uid}/preferences",
    dependencies=[UserDep],
    summary="The user's preferences and each installed app's",
    response_model=Preferences,
)
async def get_preferences(uid: str, platform: PlatformDep) -> dict[str, Any]:
    return await platform.db.query(partial(preferences.get_preferences, uid=uid))


@router.put(
    "/{uid}/preferences",
    dependencies=[UserDep],
    summary="Replace the user's preferences (keys left out: their defaults)",
    response_model=Preferences,
)
async def put_preferences(
    uid: str, body: preferences.PreferencesIn, platform: PlatformDep
) -> dict[str, Any]:
    return await platform.db.write(partial(preferences.put_preferences, uid=uid, document=body))
