"""Priority, expiry and badge as each push service receives them (issue 17): FCM, APNs and Web
Push, seen by the local fakes; the default (normal, no ttl) sends what was sent before."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from nudge.delivery.providers.apns import ApnsProvider
from nudge.delivery.providers.base import Outcome, ProviderDeps, Target
from nudge.delivery.providers.fcm import FcmProvider
from nudge.delivery.providers.webpush import WebPushProvider
from tests.delivery.conftest import built, push_message, vapid_public
from tests.fakes.apns import FakeApns
from tests.fakes.fcm import FakeFcm
from tests.fakes.webpush import FakePushService

APNS_TARGET = Target("apns", "dev_1", "c3" * 32)
FCM_TARGET = Target("fcm", "dev_2", "fcm-token-1")

# priority -> FCM android.priority, apns-priority, aps.interruption-level, Web Push Urgency
PRIORITIES = [
    ("high", "high", "10", "time-sensitive", "high"),
    ("normal", "high", "10", None, "high"),
    ("low", "normal", "5", "passive", "low"),
]


@pytest.mark.parametrize("priority, android, apns_priority, level, urgency", PRIORITIES)
async def test_fcm_maps_the_priority_to_android_and_to_the_blocks_it_forwards(
    fcm: FakeFcm,
    deps: ProviderDeps,
    priority: str,
    android: str,
    apns_priority: str,
    level: str | None,
    urgency: str,
) -> None:
    async with built(FcmProvider, deps) as provider:
        result = await provider.send(push_message(priority=priority), FCM_TARGET)
    assert result.outcome is Outcome.DELIVERED
    [call] = fcm.calls
    sent = call.message
    assert sent["android"]["priority"] == android
    assert sent["apns"]["headers"]["apns-priority"] == apns_priority
    assert "apns-expiration" not in sent["apns"]["headers"]  # no ttl: as before
    aps = sent["apns"].get("payload", {}).get("aps", {})
    assert aps.get("interruption-level") == level
    assert sent["webpush"]["headers"]["Urgency"] == urgency


async def test_fcm_takes_its_ttls_from_the_expiry(fcm: FakeFcm, deps: ProviderDeps) -> None:
    expires_at = time.time() + 120
    async with built(FcmProvider, deps) as provider:
        await provider.send(push_message(expires_at=expires_at), FCM_TARGET)
    sent = fcm.calls[0].message
    ttl = int(sent["android"]["ttl"].removesuffix("s"))
    assert 115 <= ttl <= 120  # what is left of the sender's 120 s, not our 24 h max age
    assert sent["webpush"]["headers"]["TTL"] == str(ttl)
    assert sent["apns"]["headers"]["apns-expiration"] == str(int(expires_at))


async def test_fcm_never_asks_for_more_than_four_weeks(fcm: FakeFcm, deps: ProviderDeps) -> None:
    async with built(FcmProvider, deps) as provider:
        result = await provider.send(
            push_message(expires_at=time.time() + 60 * 24 * 3600), FCM_TARGET
        )
    assert result.outcome is Outcome.DELIVERED  # the fake refuses a ttl over four weeks
    assert fcm.calls[0].message["android"]["ttl"] == f"{28 * 24 * 3600}s"


@pytest.mark.parametrize("priority, android, apns_priority, level, urgency", PRIORITIES)
async def test_apns_maps_the_priority_to_its_header_and_interruption_level(
    apns: FakeApns,
    deps: ProviderDeps,
    priority: str,
    android: str,
    apns_priority: str,
    level: str | None,
    urgency: str,
) -> None:
    async with built(ApnsProvider, deps) as provider:
        result = await provider.send(push_message(priority=priority), APNS_TARGET)
    assert result.outcome is Outcome.DELIVERED
    [call] = apns.calls
    assert call.headers["apns-priority"] == apns_priority
    assert call.payload["aps"].get("interruption-level") == level
    assert "badge" not in call.payload["aps"]  # None: leave the badge as it is


async def test_apns_expiration_is_the_senders_expiry_else_the_end_of_the_max_age(
    apns: FakeApns, deps: ProviderDeps
) -> None:
    expires_at = time.time() + 300.7
    plain = push_message()
    async with built(ApnsProvider, deps) as provider:
        await provider.send(push_message(expires_at=expires_at), APNS_TARGET)
        await provider.send(plain, APNS_TARGET)
        max_age_s = provider.max_age_s
    with_ttl, without = apns.calls
    assert with_ttl.headers["apns-expiration"] == str(int(expires_at))
    assert without.headers["apns-expiration"] == str(int(plain.created_at + max_age_s))


@pytest.mark.parametrize("badge", [0, 7])
async def test_apns_sets_the_badge_it_is_given(
    apns: FakeApns, deps: ProviderDeps, badge: int
) -> None:
    async with built(ApnsProvider, deps) as provider:
        result = await provider.send(push_message(badge=badge), APNS_TARGET)
    assert result.outcome is Outcome.DELIVERED
    assert apns.calls[0].payload["aps"]["badge"] == badge


def subscription(push_service: FakePushService, key: ec.EllipticCurvePrivateKey) -> Target:
    sub = push_service.subscribe(vapid_public(key))
    return Target("webpush", "dev_3", subscription=sub.info())


@pytest.mark.parametrize("priority, urgency", [(p[0], p[4]) for p in PRIORITIES])
async def test_web_push_urgency_follows_the_priority(
    push_service: FakePushService,
    vapid_key: ec.EllipticCurvePrivateKey,
    deps: ProviderDeps,
    priority: str,
    urgency: str,
) -> None:
    async with built(WebPushProvider, deps) as provider:
        target = subscription(push_service, vapid_key)
        result = await provider.send(push_message(priority=priority), target)
    assert result.outcome is Outcome.DELIVERED
    assert push_service.calls[0].headers["urgency"] == urgency


@pytest.mark.parametrize(
    "expires_in, lowest, highest",
    [(90.0, 85, 90), (None, 24 * 3600 - 5, 24 * 3600)],  # None: the rest of our max age
)
async def test_web_push_ttl_is_the_time_left(
    push_service: FakePushService,
    vapid_key: ec.EllipticCurvePrivateKey,
    deps: ProviderDeps,
    expires_in: float | None,
    lowest: int,
    highest: int,
) -> None:
    overrides: dict[str, Any] = {}
    if expires_in is not None:
        overrides["expires_at"] = time.time() + expires_in
    async with built(WebPushProvider, deps, delivery_max_age_s=24 * 3600.0) as provider:
        target = subscription(push_service, vapid_key)
        await provider.send(push_message(**overrides), target)
    assert lowest <= int(push_service.calls[0].headers["ttl"]) <= highest
