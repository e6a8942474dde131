"""Fixtures for delivery tests: the fake push services, served locally, and settings that point
the real provider code at them."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from nudge.bus.local import LocalEventBus
from nudge.config import Settings
from nudge.delivery.providers.base import ProviderDeps, PushMessage
from nudge.delivery.providers.http import TRANSPORTS
from nudge.ids import new_id
from nudge.store.db import Database
from nudge.store.migrate import upgrade
from tests.conftest import make_settings
from tests.fakes.apns import FakeApns
from tests.fakes.asgi import serve
from tests.fakes.fcm import FakeFcm
from tests.fakes.webpush import FakePushService, b64url, public_bytes
from tests.net.conftest import listener  # noqa: F401 -- the fixture, for the Web Push guard tests

VAPID_SUBJECT = "mailto:ops@nudge.example"


class Fake(Protocol):
    app: Any
    base_url: str


F = TypeVar("F", bound=Fake)


@asynccontextmanager
async def serving(fake: F) -> AsyncIterator[F]:
    """Serve a fake (hypercorn: HTTP/1.1 and h2c) and tell it its base URL."""
    async with serve(fake.app) as url:
        fake.base_url = url
        yield fake


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database (SQLite and PostgreSQL, from ``database_url``)."""
    await upgrade(database_url)
    database = Database(database_url)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def fcm() -> AsyncIterator[FakeFcm]:
    async with serving(FakeFcm()) as fake:
        yield fake


@pytest.fixture
async def apns() -> AsyncIterator[FakeApns]:
    async with serving(FakeApns()) as fake:
        yield fake


@pytest.fixture
async def push_service() -> AsyncIterator[FakePushService]:
    async with serving(FakePushService()) as fake:
        yield fake


@pytest.fixture
def vapid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def vapid_public(key: ec.EllipticCurvePrivateKey) -> bytes:
    return public_bytes(key)


def fcm_settings(fake: FakeFcm, tmp_path: Path, **account: Any) -> dict[str, Any]:
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps({**fake.service_account(), **account}))
    return {"fcm_base_url": fake.base_url, "fcm_credentials_file": str(path)}


def apns_settings(fake: FakeApns, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    path = tmp_path / "AuthKey.p8"
    path.write_bytes(fake.key_pem())
    return {
        "apns_base_url": fake.base_url,
        "apns_key_file": str(path),
        "apns_key_id": fake.key_id,
        "apns_team_id": fake.team_id,
        "apns_topic": fake.topic,
        **overrides,
    }


def vapid_settings(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    raw = key.private_numbers().private_value.to_bytes(32, "big")
    return {"vapid_private_key": b64url(raw), "vapid_subject": VAPID_SUBJECT}


@pytest.fixture
def settings(
    tmp_path: Path,
    fcm: FakeFcm,
    apns: FakeApns,
    push_service: FakePushService,
    vapid_key: ec.EllipticCurvePrivateKey,
) -> Settings:
    """Settings for a platform whose providers all point at the local fakes."""
    return make_settings(
        tmp_path,
        **fcm_settings(fcm, tmp_path),
        **apns_settings(apns, tmp_path),
        **vapid_settings(vapid_key),
        webpush_allowed_hosts="127.0.0.1",  # the fake push service
        delivery_base_backoff_s=0.05,
        delivery_max_backoff_s=0.2,
    )


def configured(cls: Any, deps: ProviderDeps, **overrides: Any) -> Any:
    """``cls.from_deps`` on the test settings with ``overrides``."""
    settings = deps.settings.model_copy(update=overrides)
    return cls.from_deps(ProviderDeps(settings, deps.bus))


@asynccontextmanager
async def built(cls: Any, deps: ProviderDeps, **overrides: Any) -> AsyncIterator[Any]:
    """A provider as :func:`configured` makes it, closed afterwards."""
    provider = configured(cls, deps, **overrides)
    try:
        yield provider
    finally:
        await provider.aclose()


@pytest.fixture(params=TRANSPORTS)
async def deps(settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[ProviderDeps]:
    """Provider dependencies; each provider test runs over each push HTTP transport."""
    yield ProviderDeps(
        settings=settings.model_copy(update={"push_http_transport": request.param}),
        bus=LocalEventBus(),
    )


def push_message(**overrides: Any) -> PushMessage:
    nid = new_id("n")
    values: dict[str, Any] = {
        "notification_id": nid,
        "app_id": "app_mentor",
        "uid": "user123",
        "title": "Mentor says",
        "body": "Time to stretch!",
        "data": {
            "app_id": "app_mentor",
            "notification_id": nid,
            "type": "direct",
            "navigate_to": "/chat/app_mentor",
        },
        "collapse_key": "0123456789abcdef0123456789abcdef",
        "created_at": time.time(),
    }
    values.update(overrides)
    return PushMessage(**values)
