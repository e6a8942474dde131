"""Apps and their keys. A key (``sk_`` + 32 hex) is shown once; only its SHA-256 is kept."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from nudge.core.manifest import Manifest
from nudge.errors import Invalid, NotFound
from nudge.ids import hash_secret, new_app_secret, new_id, new_webhook_secret
from nudge.store import accounts
from nudge.text import STORED


@dataclass(frozen=True)
class AppRecord:
    id: str
    name: str
    manifest: Manifest
    webhook_secret: str
    direct_limit_per_hour: int | None
    status: str
    status_reason: str

    @classmethod
    def from_row(cls, row: Any) -> AppRecord:
        return cls(
            id=row.id,
            name=row.name,
            manifest=Manifest.model_validate(row.manifest, context=STORED),
            webhook_secret=row.webhook_secret,
            direct_limit_per_hour=row.direct_limit_per_hour,
            status=row.status,
            status_reason=row.status_reason,
        )

    def public(self) -> dict[str, Any]:
        return {
            "app_id": self.id,
            "name": self.name,
            "manifest": self.manifest.model_dump(exclude_none=True),
            "direct_limit_per_hour": self.direct_limit_per_hour,
            "status": self.status,
            "status_reason": self.status_reason,
        }


def create_app(
    conn: Connection, manifest: Manifest, *, direct_limit_per_hour: int | None = None
) -> dict[str, str]:
    """Register an app; returns its id, first app secret and webhook signing secret (shown once)."""
    if direct_limit_per_hour is not None and direct_limit_per_hour < 1:
        raise Invalid("direct_limit_per_hour: must be at least 1")
    app_id = new_id("app")
    webhook_secret = new_webhook_secret()
    accounts.add(
        conn,
        "apps",
        id=app_id,
        name=manifest.name,
        description=manifest.description,
        manifest=manifest.model_dump(mode="json", exclude_none=True),
        webhook_secret=webhook_secret,
        direct_limit_per_hour=direct_limit_per_hour,
        status="active",
        status_reason="",
        created_at=time.time(),
    )
    key = create_key(conn, app_id)
    return {
        "app_id": app_id,
        "app_secret": key["app_secret"],
        "webhook_secret": webhook_secret,
        "key_id": key["key_id"],
    }


def get_app(conn: Connection, app_id: str) -> AppRecord:
    rows = accounts.apps(conn, app_id)
    if not rows:
        raise NotFound(f"app {app_id!r} not found")
    return AppRecord.from_row(rows[0])


def list_apps(conn: Connection) -> list[AppRecord]:
    return [AppRecord.from_row(r) for r in accounts.apps(conn)]


def create_key(conn: Connection, app_id: str) -> dict[str, str]:
    get_app(conn, app_id)
    secret = new_app_secret()
    key_id = new_id("key")
    accounts.add(
        conn,
        "app_keys",
        id=key_id,
        app_id=app_id,
        key_hash=hash_secret(secret),
        hint=secret[:7] + "…",
        created_at=time.time(),
        revoked_at=None,
    )
    return {"key_id": key_id, "app_secret": secret}


def list_keys(conn: Connection, app_id: str) -> list[dict[str, Any]]:
    get_app(conn, app_id)
    return [
        {
            "key_id": r.id,
            "hint": r.hint,
            "created_at": r.created_at,
            "revoked": r.revoked_at is not None,
            "revoked_at": r.revoked_at,
        }
        for r in accounts.keys(conn, app_id)
    ]


def revoke_key(conn: Connection, app_id: str, key_id: str) -> None:
    if not accounts.revoke_key(conn, app_id, key_id, time.time()):
        raise NotFound(f"active key {key_id!r} not found for app {app_id!r}")
