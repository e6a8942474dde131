"""The APNs provider against the local fake APNs, over HTTP/2 (h2c, prior knowledge)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from nudge.delivery.providers import apns as apns_module
from nudge.delivery.providers.apns import ApnsProvider
from nudge.delivery.providers.base import (
    Outcome,
    ProviderDeps,
    ProviderNotConfigured,
    SendResult,
    Target,
)
from tests.delivery.conftest import built, configured, push_message
from tests.fakes.apns import FakeApns, apns_error
from tests.fakes.asgi import Reply

TOKEN = "a1" * 32
TARGET = Target("apns", "dev_1", TOKEN)


@pytest.fixture
async def provider(deps: ProviderDeps) -> AsyncIterator[ApnsProvider]:
    async with built(ApnsProvider, deps) as p:
        yield p


async def test_sends_over_http2_with_a_provider_token_and_apples_headers(
    apns: FakeApns, provider: ApnsProvider
) -> None:
    message = push_message()
    message.data["deep_link"] = "/tasks/1"
    assert await provider.send(message, TARGET) == SendResult(Outcome.DELIVERED)

    assert apns.refused == []  # so it was HTTP/2 (the fake refuses anything else)
    [call] = apns.calls
    assert call.token == TOKEN
    h = call.headers
    assert h["apns-topic"] == apns.topic
    assert h["apns-push-type"] == "alert"
    assert h["apns-priority"] == "10"
    assert h["apns-collapse-id"] == message.collapse_key
    assert int(h["apns-expiration"]) == int(message.created_at + provider.max_age_s)
    assert uuid.UUID(h["apns-id"])
    assert call.payload["aps"]["alert"] == {"title": "Mentor says", "body": "Time to stretch!"}
    assert call.payload["notification_id"] == message.notification_id
    assert call.payload["deep_link"] == "/tasks/1"
    header = jwt.get_unverified_header(call.bearer)
    claims = jwt.decode(call.bearer, apns.key.public_key(), algorithms=["ES256"])
    assert header["kid"] == apns.key_id and claims["iss"] == apns.team_id
    assert abs(claims["iat"] - time.time()) < 60


async def test_the_same_delivery_keeps_its_apns_id_on_retry(
    apns: FakeApns, provider: ApnsProvider
) -> None:
    message = push_message()
    await provider.send(message, TARGET)
    await provider.send(message, TARGET)
    await provider.send(push_message(), TARGET)
    ids = [c.headers["apns-id"] for c in apns.calls]
    assert ids[0] == ids[1] != ids[2]


async def test_the_provider_token_is_reused_then_renewed_after_40_minutes(
    apns: FakeApns, provider: ApnsProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        await provider.send(push_message(), TARGET)
    assert len({c.bearer for c in apns.calls}) == 1

    real = time.time
    monkeypatch.setattr(apns_module.time, "time", lambda: real() + 41 * 60)
    await provider.send(push_message(), TARGET)
    assert len({c.bearer for c in apns.calls}) == 2


async def test_an_expired_provider_token_is_renewed_once_and_the_send_retried(
    apns: FakeApns, provider: ApnsProvider
) -> None:
    await provider.send(push_message(), TARGET)
    apns.expire_bearers.add(apns.calls[0].bearer)
    assert (await provider.send(push_message(), TARGET)).outcome is Outcome.DELIVERED
    assert [reason for _, reason in apns.refused] == ["ExpiredProviderToken"]
    assert apns.calls[1].bearer != apns.calls[0].bearer


async def test_a_token_signed_with_another_key_is_a_provider_alert(
    apns: FakeApns, deps: ProviderDeps, tmp_path: Path
) -> None:
    other = tmp_path / "other.p8"
    other.write_bytes(apns.key_pem(ec.generate_private_key(ec.SECP256R1())))
    async with built(ApnsProvider, deps, apns_key_file=str(other)) as p:
        result = await p.send(push_message(), TARGET)
    assert result.outcome is Outcome.PROVIDER_ALERT and "InvalidProviderToken" in result.reason


async def test_a_wrong_topic_keeps_the_device(apns: FakeApns, deps: ProviderDeps) -> None:
    async with built(ApnsProvider, deps, apns_topic="com.example.other") as p:
        result = await p.send(push_message(), TARGET)
    assert result.outcome is Outcome.FAILED and "DeviceTokenNotForTopic" in result.reason


@pytest.mark.parametrize(
    ("reply", "outcome", "retry_after"),
    [
        (apns_error(410, "Unregistered"), Outcome.TOKEN_INVALID, None),
        (apns_error(410, "ExpiredToken"), Outcome.TOKEN_INVALID, None),
        (apns_error(400, "BadDeviceToken"), Outcome.TOKEN_INVALID, None),
        (apns_error(400, "DeviceTokenNotForTopic"), Outcome.FAILED, None),
        (apns_error(400, "TopicDisallowed"), Outcome.PROVIDER_ALERT, None),
        (apns_error(403, "InvalidProviderToken"), Outcome.PROVIDER_ALERT, None),
        (apns_error(403, "BadCertificateEnvironment"), Outcome.PROVIDER_ALERT, None),
        (apns_error(413, "PayloadTooLarge"), Outcome.FAILED, None),
        (apns_error(429, "TooManyRequests", retry_after="4"), Outcome.RETRY, 4.0),
        (apns_error(500, "InternalServerError"), Outcome.RETRY, None),
        (apns_error(503, "ServiceUnavailable", retry_after="2"), Outcome.RETRY, 2.0),
        (apns_error(503, "Shutdown"), Outcome.RETRY, None),
    ],
    ids=lambda v: f"{v.status}-{v.body['reason']}" if isinstance(v, Reply) else None,
)
async def test_apns_error_table(
    apns: FakeApns,
    provider: ApnsProvider,
    reply: Reply,
    outcome: Outcome,
    retry_after: float | None,
) -> None:
    apns.script.queue(TOKEN, reply)
    result = await provider.send(push_message(), TARGET)
    assert result.outcome is outcome, result
    assert result.retry_after == retry_after
    assert reply.body["reason"] in result.reason


async def test_a_long_collapse_key_and_body_are_cut_to_apples_limits(
    apns: FakeApns, provider: ApnsProvider
) -> None:
    body = "naïve café — " * 400
    result = await provider.send(push_message(body=body, collapse_key="ключ" * 20), TARGET)
    assert result.outcome is Outcome.DELIVERED  # the fake answers 413/BadCollapseId otherwise
    [call] = apns.calls
    collapse = call.headers["apns-collapse-id"]
    assert collapse.isascii() and len(collapse) <= 64
    sent = call.payload["aps"]["alert"]["body"]
    assert sent.endswith("…") and body.startswith(sent[:-1])
    assert 4096 - 20 < call.size <= 4096


def test_missing_settings_are_named(deps: ProviderDeps, tmp_path: Path) -> None:
    with pytest.raises(ProviderNotConfigured, match="NUDGE_APNS_TEAM_ID, NUDGE_APNS_TOPIC"):
        configured(ApnsProvider, deps, apns_team_id=None, apns_topic=None)
    rsa_like = tmp_path / "not-a-key.p8"
    rsa_like.write_text("hello")
    with pytest.raises(ProviderNotConfigured, match="cannot be read as a .p8 key"):
        configured(ApnsProvider, deps, apns_key_file=str(rsa_like))
