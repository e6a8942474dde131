"""The FCM provider against the local fake FCM (OAuth2 token endpoint + HTTP v1 send API)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from nudge.delivery.providers.base import (
    Outcome,
    ProviderDeps,
    ProviderNotConfigured,
    SendResult,
    Target,
)
from nudge.delivery.providers.fcm import FcmProvider
from tests.delivery.conftest import built, configured, fcm_settings, push_message
from tests.fakes.asgi import Reply, free_port
from tests.fakes.fcm import FakeFcm, bad_request, fcm_error

TARGET = Target("fcm", "dev_1", "fcm-token-1")


async def send_with_account(
    deps: ProviderDeps, tmp_path: Path, fake: FakeFcm, **account: object
) -> SendResult:
    """One send by a provider whose service-account file has ``account`` changed."""
    async with built(FcmProvider, deps, **fcm_settings(fake, tmp_path, **account)) as p:
        return await p.send(push_message(), TARGET)


@pytest.fixture
async def provider(deps: ProviderDeps) -> AsyncIterator[FcmProvider]:
    async with built(FcmProvider, deps) as p:
        yield p


async def test_sends_an_http_v1_message_with_a_token_from_the_service_accounts_token_uri(
    fcm: FakeFcm, provider: FcmProvider
) -> None:
    message = push_message()
    message.data.update({"deep_link": "/tasks/1", "count": 3, "flags": {"a": True}})
    assert await provider.send(message, TARGET) == SendResult(Outcome.DELIVERED)

    [call] = fcm.calls
    sent = call.message
    assert sent["token"] == "fcm-token-1"
    assert sent["notification"] == {"title": "Mentor says", "body": "Time to stretch!"}
    assert sent["data"] == {
        "app_id": "app_mentor",
        "notification_id": message.notification_id,
        "type": "direct",
        "navigate_to": "/chat/app_mentor",
        "deep_link": "/tasks/1",
        "count": "3",
        "flags": '{"a":true}',
    }
    ck = message.collapse_key
    assert sent["android"]["collapse_key"] == ck
    assert sent["android"]["priority"] == "high"
    ttl = int(sent["android"]["ttl"].removesuffix("s"))
    assert 0 < ttl <= provider.max_age_s
    assert sent["apns"]["headers"] == {"apns-collapse-id": ck, "apns-priority": "10"}
    assert sent["webpush"]["headers"] == {"Topic": ck, "Urgency": "high", "TTL": str(ttl)}
    # The assertion was verified by the fake's token endpoint, at the file's own token_uri.
    [claims] = fcm.token_requests
    assert claims["aud"] == fcm.token_uri and claims["iss"] == fcm.client_email


async def test_access_token_is_cached(fcm: FakeFcm, provider: FcmProvider) -> None:
    for _ in range(3):
        assert (await provider.send(push_message(), TARGET)).outcome is Outcome.DELIVERED
    assert len(fcm.token_requests) == 1
    assert len({c.access_token for c in fcm.calls}) == 1


async def test_access_token_is_refreshed_before_it_expires(
    fcm: FakeFcm, provider: FcmProvider
) -> None:
    fcm.token_lifetime_s = 2  # refreshed at half its life when that is shorter than 5 minutes
    await provider.send(push_message(), TARGET)
    await asyncio.sleep(1.2)
    await provider.send(push_message(), TARGET)
    assert len(fcm.token_requests) == 2
    # Both sends were accepted on their first try: the refresh came before any 401.
    assert fcm.unauthenticated == 0
    assert fcm.calls[0].access_token != fcm.calls[1].access_token


async def test_a_refused_access_token_is_refreshed_once_and_the_send_retried(
    fcm: FakeFcm, provider: FcmProvider
) -> None:
    await provider.send(push_message(), TARGET)
    fcm.revoke_all()
    assert (await provider.send(push_message(), TARGET)).outcome is Outcome.DELIVERED
    assert len(fcm.token_requests) == 2 and len(fcm.calls) == 2 and fcm.unauthenticated == 1

    fcm.token_lifetime_s = 0  # every token the fake issues is dead on arrival
    fcm.revoke_all()
    result = await provider.send(push_message(), TARGET)
    assert result.outcome is Outcome.PROVIDER_ALERT
    assert "UNAUTHENTICATED" in result.reason
    assert len(fcm.token_requests) == 3  # one refresh, not a loop


async def test_an_assertion_signed_with_the_wrong_key_is_a_provider_alert(
    fcm: FakeFcm, deps: ProviderDeps, tmp_path: Path
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    account = fcm.service_account(other)
    result = await send_with_account(deps, tmp_path, fcm, private_key=account["private_key"])
    assert result.outcome is Outcome.PROVIDER_ALERT
    assert "invalid_grant" in result.reason and "NUDGE_FCM_CREDENTIALS_FILE" in result.reason
    assert fcm.calls == [] and fcm.token_requests == []


async def test_a_refused_service_account_is_asked_for_once_not_per_send(
    fcm: FakeFcm, provider: FcmProvider
) -> None:
    fcm.refuse_tokens = True
    results = await asyncio.gather(*(provider.send(push_message(), TARGET) for _ in range(20)))
    assert {r.outcome for r in results} == {Outcome.PROVIDER_ALERT}
    assert fcm.token_attempts == 1 and fcm.calls == []


async def test_an_unreachable_token_endpoint_is_retried(
    fcm: FakeFcm, deps: ProviderDeps, tmp_path: Path
) -> None:
    result = await send_with_account(
        deps, tmp_path, fcm, token_uri=f"http://127.0.0.1:{free_port()}/token"
    )
    assert result.outcome is Outcome.RETRY
    assert "token endpoint unreachable: ConnectError" in result.reason


async def test_a_connection_closed_before_the_answer_is_retried(
    fcm: FakeFcm, deps: ProviderDeps
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the request's headers, then no answer
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with built(FcmProvider, deps, fcm_base_url=f"http://127.0.0.1:{port}") as p:
            result = await p.send(push_message(), TARGET)
    finally:
        server.close()
    assert result.outcome is Outcome.RETRY and result.reason.startswith("FCM unreachable: ")
    assert fcm.calls == [] and fcm.token_attempts == 1  # the token came from the fake


async def test_a_project_we_may_not_send_for_is_a_provider_alert(
    fcm: FakeFcm, deps: ProviderDeps, tmp_path: Path
) -> None:
    result = await send_with_account(deps, tmp_path, fcm, project_id="someone-elses-project")
    assert result.outcome is Outcome.PROVIDER_ALERT and "PERMISSION_DENIED" in result.reason


@pytest.mark.parametrize(
    ("reply", "outcome", "retry_after"),
    [
        (fcm_error("UNREGISTERED"), Outcome.TOKEN_INVALID, None),
        (fcm_error("INVALID_ARGUMENT"), Outcome.TOKEN_INVALID, None),  # a bad token
        (bad_request("message.android.ttl", "Invalid value"), Outcome.FAILED, None),  # bad payload
        (fcm_error("SENDER_ID_MISMATCH"), Outcome.FAILED, None),
        (fcm_error("QUOTA_EXCEEDED", retry_after="7"), Outcome.RETRY, 7.0),
        (fcm_error("UNAVAILABLE", retry_after="3"), Outcome.RETRY, 3.0),
        (fcm_error("INTERNAL"), Outcome.RETRY, None),
        (fcm_error("THIRD_PARTY_AUTH_ERROR"), Outcome.PROVIDER_ALERT, None),
        (Reply(502, "<html>Bad Gateway</html>"), Outcome.RETRY, None),
    ],
    ids=lambda v: (
        v.body["error"]["details"][0].get("errorCode", "BadRequest")
        if isinstance(v, Reply) and isinstance(v.body, dict)
        else None
    ),
)
async def test_fcm_error_table(
    fcm: FakeFcm,
    provider: FcmProvider,
    reply: Reply,
    outcome: Outcome,
    retry_after: float | None,
) -> None:
    fcm.script.queue(TARGET.token or "", reply)
    result = await provider.send(push_message(), TARGET)
    assert result.outcome is outcome, result
    assert result.retry_after == retry_after
    assert result.reason.startswith("FCM")


async def test_an_oversized_body_is_cut_at_a_character_boundary(
    fcm: FakeFcm, provider: FcmProvider
) -> None:
    body = "é👍🏽 " * 500  # 2,000 characters, 6,500 bytes of UTF-8
    result = await provider.send(push_message(body=body), TARGET)
    assert result.outcome is Outcome.DELIVERED  # the fake refuses anything over 4096 bytes
    [call] = fcm.calls
    sent = call.message["notification"]["body"]
    assert sent.endswith("…") and body.startswith(sent[:-1])
    assert not sent[:-1].endswith("👍")  # the skin-tone modifier stayed with its emoji
    assert 4096 - 20 < call.size <= 4096  # cut no more than needed


def test_missing_or_broken_credentials_say_what_to_set(deps: ProviderDeps, tmp_path: Path) -> None:
    with pytest.raises(ProviderNotConfigured, match="NUDGE_FCM_CREDENTIALS_FILE"):
        configured(FcmProvider, deps, fcm_credentials_file=None)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"project_id": "p", "client_email": "x@y"}))
    with pytest.raises(ProviderNotConfigured, match="private_key, token_uri"):
        configured(FcmProvider, deps, fcm_credentials_file=str(broken))
