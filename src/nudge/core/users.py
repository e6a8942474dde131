"""Users, their facts, installs (with granted scopes) and devices."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import Connection

from nudge.core.apps import AppRecord, get_app
from nudge.core.manifest import SCOPES
from nudge.errors import Conflict, Invalid, NotFound
from nudge.ids import hash_secret, new_id, new_user_token
from nudge.net.guard import HostAllowList
from nudge.net.webhooks import WebhookClient, WebhookTarget
from nudge.store import accounts
from nudge.text import Line, Text, text_problem

UID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    uid: str | None = Field(
        default=None, description="Your own id for the user; generated if absent"
    )
    name: Line = Field(min_length=1, max_length=200)
    facts: list[Text] = Field(default_factory=list, max_length=500)

    @field_validator("uid")
    @classmethod
    def _uid(cls, value: str | None) -> str | None:
        if value is not None and not UID_RE.match(value):
            raise ValueError("must be 1-128 characters of letters, digits and _ . : @ -")
        return value

    @field_validator("facts")
    @classmethod
    def _facts(cls, value: list[str]) -> list[str]:
        for fact in value:
            if not fact.strip() or len(fact) > 2000:
                raise ValueError("each fact must be 1 to 2000 characters")
        return value


class NewFacts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    facts: list[Text] = Field(min_length=1, max_length=500)

    _check = field_validator("facts")(NewUser._facts.__func__)  # type: ignore[attr-defined]


class NewInstall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scopes: list[Literal["user_name", "user_facts", "user_context", "user_chat"]] = Field(
        default_factory=list
    )


class NewDevice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    platform: Literal["fcm", "apns", "webpush", "log"]
    token: Line | None = Field(default=None, max_length=4096)
    subscription: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _target(self) -> NewDevice:
        if self.platform == "webpush":
            sub = self.subscription
            keys = (sub or {}).get("keys") or {}
            endpoint = (sub or {}).get("endpoint")
            if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
                raise ValueError(
                    "subscription.endpoint: a Web Push subscription needs an http(s) endpoint"
                )
            problem = text_problem(endpoint, line=True)
            if problem is not None:
                raise ValueError(f"subscription.endpoint: {problem}")
            if not isinstance(keys.get("p256dh"), str) or not isinstance(keys.get("auth"), str):
                raise ValueError("subscription.keys: needs 'p256dh' and 'auth' (base64url strings)")
            self.token = endpoint
        else:
            if not self.token or not self.token.strip():
                raise ValueError(f"token: required for platform {self.platform!r}")
            if self.platform == "apns" and not re.fullmatch(r"[0-9a-fA-F]{64,200}", self.token):
                raise ValueError("token: an APNs device token is hex (64 characters or more)")
        return self


def create_user(conn: Connection, new: NewUser) -> dict[str, str]:
    uid = new.uid or new_id("u")
    token = new_user_token()
    if not accounts.insert_user(
        conn, uid=uid, name=new.name, token_hash=hash_secret(token), created_at=time.time()
    ):
        raise Conflict(f"user {uid!r} already exists")
    if new.facts:
        add_facts(conn, uid, new.facts)
    return {"uid": uid, "user_token": token}


def get_user(conn: Connection, uid: str) -> Any:
    row = accounts.user(conn, uid)
    if row is None:
        raise NotFound(f"user {uid!r} not found")
    return row


def add_facts(conn: Connection, uid: str, facts: list[str]) -> list[str]:
    get_user(conn, uid)
    now = time.time()
    accounts.insert_facts(conn, [{"uid": uid, "text": f, "created_at": now} for f in facts])
    return list_facts(conn, uid)


def list_facts(conn: Connection, uid: str) -> list[str]:
    get_user(conn, uid)
    return [r.text for r in accounts.facts(conn, uid)]


async def check_setup_completed(
    webhooks: WebhookClient, app: AppRecord, setup_url: str, uid: str
) -> None:
    """Omi's install-time check: ``GET {setup_completed_url}?uid=U`` must say it is complete.

    Made like every call to an app: signed, SSRF-checked, bounded, no redirects.
    """
    target = WebhookTarget(app.id, app.webhook_secret)
    result = await webhooks.send(target, "GET", setup_url, params={"uid": uid})
    if not result.ok:
        raise Conflict(f"setup check at {setup_url} failed ({result.error}); try again")
    try:
        body = json.loads(result.body)
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("is_setup_completed") is not True:
        raise Conflict(
            "the app says its setup is not completed for this user: finish its auth steps first"
        )


def install_app(conn: Connection, uid: str, app_id: str, scopes: Sequence[str]) -> dict[str, Any]:
    """Install (or re-grant) an app for a user. Only scopes the app asks for can be granted."""
    get_user(conn, uid)
    app = get_app(conn, app_id)
    requested = set(app.manifest.proactive_scopes)
    extra = [s for s in scopes if s not in requested]
    if extra:
        raise Invalid(
            f"scopes: {extra} are not requested by this app (it requests {sorted(requested)})"
        )
    granted = [s for s in SCOPES if s in scopes]
    accounts.replace_install(conn, uid, app_id, granted, time.time())
    return {"uid": uid, "app_id": app_id, "scopes": granted}


def uninstall_app(conn: Connection, uid: str, app_id: str) -> None:
    if not accounts.delete_install(conn, uid, app_id):
        raise NotFound(f"app {app_id!r} is not installed for user {uid!r}")


def list_installs(conn: Connection, uid: str) -> list[dict[str, Any]]:
    get_user(conn, uid)
    return accounts.installs(conn, uid)


def add_device(
    conn: Connection, uid: str, new: NewDevice, *, webpush_hosts: HostAllowList
) -> dict[str, Any]:
    """Register a device; registering the same token again returns the existing device. A Web
    Push endpoint's host must be on ``webpush_hosts`` (checked again at every send)."""
    if new.platform == "webpush":
        try:
            host = urlsplit(new.token or "").hostname or ""
        except ValueError as exc:  # e.g. an unclosed IPv6 bracket
            raise Invalid(f"subscription.endpoint: not a valid URL ({exc})") from None
        refusal = webpush_hosts.refusal(host)
        if refusal is not None:
            raise Invalid(f"subscription.endpoint: {refusal} (NUDGE_WEBPUSH_ALLOWED_HOSTS)")
    get_user(conn, uid)
    assert new.token is not None
    existing = accounts.device_id(conn, uid, new.platform, new.token)
    if existing is not None:
        return {"id": existing, "platform": new.platform, "created": False}
    device_id = new_id("dev")
    accounts.add(
        conn,
        "devices",
        id=device_id,
        uid=uid,
        platform=new.platform,
        token=new.token,
        subscription=new.subscription,
        created_at=time.time(),
    )
    return {"id": device_id, "platform": new.platform, "created": True}


def list_devices(conn: Connection, uid: str) -> list[dict[str, Any]]:
    get_user(conn, uid)
    return [
        {
            "id": r.id,
            "platform": r.platform,
            "token_hint": r.token[:8] + "…",
            "created_at": r.created_at,
        }
        for r in accounts.devices(conn, uid)
    ]


def delete_device(conn: Connection, uid: str, device_id: str) -> None:
    if not accounts.delete_device(conn, uid, device_id):
        raise NotFound(f"device {device_id!r} not found for user {uid!r}")


def chat_messages(conn: Connection, uid: str, app_id: str, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` messages between the user and an app, oldest first."""
    get_user(conn, uid)
    return accounts.chat_messages(conn, uid, app_id, limit)
