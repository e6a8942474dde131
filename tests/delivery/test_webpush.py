"""The Web Push provider against a fake push service that decrypts like a browser."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from nudge.delivery.providers.base import (
    Outcome,
    ProviderDeps,
    ProviderNotConfigured,
    SendResult,
    Target,
)
from nudge.delivery.providers.webpush import WebPushProvider
from tests.delivery.conftest import (
    VAPID_SUBJECT,
    built,
    configured,
    push_message,
    vapid_public,
    vapid_settings,
)
from tests.fakes.asgi import Reply
from tests.fakes.webpush import FakePushService, Subscription


def target(sub: Subscription | Mapping[str, Any]) -> Target:
    info = sub.info() if isinstance(sub, Subscription) else sub
    return Target("webpush", "dev_1", str(info["endpoint"]), dict(info))


@pytest.fixture
async def provider(deps: ProviderDeps) -> AsyncIterator[WebPushProvider]:
    async with built(WebPushProvider, deps) as p:
        yield p


@pytest.fixture
def sub(push_service: FakePushService, vapid_key: ec.EllipticCurvePrivateKey) -> Subscription:
    return push_service.subscribe(vapid_public(vapid_key))


async def test_payload_is_encrypted_to_the_subscription_and_signed_with_vapid(
    push_service: FakePushService, provider: WebPushProvider, sub: Subscription
) -> None:
    message = push_message()
    assert await provider.send(message, target(sub)) == SendResult(Outcome.DELIVERED)

    [call] = push_service.calls  # the fake decrypted it with the subscription's private key
    assert call.payload == {
        "title": "Mentor says",
        "body": "Time to stretch!",
        "data": message.data,
    }
    h = call.headers
    assert h["content-encoding"] == "aes128gcm"
    assert 0 < int(h["ttl"]) <= provider.max_age_s
    assert h["urgency"] == "high"
    assert h["topic"] == message.collapse_key
    assert call.vapid_claims["aud"] == push_service.base_url
    assert call.vapid_claims["sub"] == VAPID_SUBJECT
    assert time.time() < call.vapid_claims["exp"] <= time.time() + 24 * 3600


async def test_the_vapid_token_is_reused_for_the_same_push_service(
    push_service: FakePushService, provider: WebPushProvider, sub: Subscription
) -> None:
    await provider.send(push_message(), target(sub))
    await provider.send(push_message(), target(sub))
    first, second = (c.headers["authorization"] for c in push_service.calls)
    assert first == second


async def test_a_payload_encrypted_to_the_wrong_keys_does_not_decrypt(
    push_service: FakePushService,
    provider: WebPushProvider,
    sub: Subscription,
    vapid_key: ec.EllipticCurvePrivateKey,
) -> None:
    other = push_service.subscribe(vapid_public(vapid_key))
    crossed = {"endpoint": sub.endpoint, "keys": other.info()["keys"]}
    result = await provider.send(push_message(), target(crossed))
    assert result.outcome is Outcome.FAILED
    assert "decryption failed" in result.reason
    assert push_service.calls == []


async def test_a_vapid_key_the_browser_did_not_subscribe_with_is_a_provider_alert(
    push_service: FakePushService, deps: ProviderDeps, sub: Subscription
) -> None:
    async with built(
        WebPushProvider, deps, **vapid_settings(ec.generate_private_key(ec.SECP256R1()))
    ) as p:
        result = await p.send(push_message(), target(sub))
    assert result.outcome is Outcome.PROVIDER_ALERT and "VAPID" in result.reason
    assert push_service.refusals[0][0] == 403


async def test_an_unsubscribed_browser_is_token_invalid(
    push_service: FakePushService, provider: WebPushProvider, sub: Subscription
) -> None:
    push_service.unsubscribe(sub.id)
    result = await provider.send(push_message(), target(sub))
    assert result.outcome is Outcome.TOKEN_INVALID and "410" in result.reason


@pytest.mark.parametrize(
    ("reply", "outcome", "retry_after"),
    [
        (Reply(404, "no such subscription"), Outcome.TOKEN_INVALID, None),
        (Reply(410, "expired"), Outcome.TOKEN_INVALID, None),
        (Reply(413, "payload too large"), Outcome.FAILED, None),
        (Reply(429, "slow down", {"Retry-After": "5"}), Outcome.RETRY, 5.0),
        (Reply(401, "unauthorized"), Outcome.PROVIDER_ALERT, None),
        (Reply(403, "forbidden"), Outcome.PROVIDER_ALERT, None),
        (Reply(400, "bad request"), Outcome.FAILED, None),
        (Reply(500, "oops"), Outcome.RETRY, None),
        (Reply(503, "busy", {"Retry-After": "9"}), Outcome.RETRY, 9.0),
    ],
    ids=lambda v: str(v.status) if isinstance(v, Reply) else None,
)
async def test_web_push_error_table(
    push_service: FakePushService,
    provider: WebPushProvider,
    sub: Subscription,
    reply: Reply,
    outcome: Outcome,
    retry_after: float | None,
) -> None:
    push_service.script.queue(sub.id, reply)
    result = await provider.send(push_message(), target(sub))
    assert result.outcome is outcome, result
    assert result.retry_after == retry_after
    assert str(reply.status) in result.reason


async def test_unusable_subscription_keys_remove_the_device(
    provider: WebPushProvider, sub: Subscription
) -> None:
    broken = {"endpoint": sub.endpoint, "keys": {"p256dh": "AAAA", "auth": "AAAA"}}
    result = await provider.send(push_message(), target(broken))
    assert result.outcome is Outcome.TOKEN_INVALID and "keys are unusable" in result.reason


async def test_private_endpoints_are_refused_unless_allowed(
    push_service: FakePushService, deps: ProviderDeps, sub: Subscription
) -> None:
    async with built(WebPushProvider, deps, allow_private_webhooks=False) as p:
        result = await p.send(push_message(), target(sub))
    assert result.outcome is Outcome.FAILED and "NUDGE_ALLOW_PRIVATE_WEBHOOKS" in result.reason
    assert push_service.calls == []


async def test_an_oversized_body_is_cut_to_fit_the_encrypted_4096_bytes(
    push_service: FakePushService, provider: WebPushProvider, sub: Subscription
) -> None:
    body = "Ünïcödé text " * 400
    result = await provider.send(push_message(body=body), target(sub))
    assert result.outcome is Outcome.DELIVERED  # the fake answers 413 over 4096 bytes
    [call] = push_service.calls
    sent = call.payload["body"]
    assert sent.endswith("…") and body.startswith(sent[:-1])
    assert 4096 - 20 < call.body_size <= 4096


def test_missing_or_bad_vapid_settings_are_explained(deps: ProviderDeps) -> None:
    with pytest.raises(ProviderNotConfigured, match="NUDGE_VAPID_PRIVATE_KEY"):
        configured(WebPushProvider, deps, vapid_private_key=None)
    with pytest.raises(ProviderNotConfigured, match="not a usable P-256 private key"):
        configured(WebPushProvider, deps, vapid_private_key="not-a-key")
    with pytest.raises(ProviderNotConfigured, match="mailto: address or an https: URL"):
        configured(WebPushProvider, deps, vapid_subject="ops@example.com")
