"""The SDK clients against a real ``nudge serve`` process, and against a scripted HTTP server
(in front of it, or alone) for the retry rules."""

from __future__ import annotations

import random
import uuid

import httpx
import pytest

from nudge.sdk import (
    AsyncNudgeClient,
    AuthenticationError,
    NotFoundError,
    NudgeClient,
    NudgeError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TransportError,
    ValidationError,
)
from tests.conftest import Server, World, free_port, make_world, wait_for
from tests.sdk.scripted import Reply, ScriptedServer

FAST = RetryPolicy(base_delay_s=0.05, max_delay_s=0.2, total_timeout_s=20.0)
OK = {"status": "ok", "notification_id": "n_scripted", "devices": 0}


async def new_world(admin: httpx.AsyncClient, **app_extra: object) -> World:
    return await make_world(admin, uid=f"u_{uuid.uuid4().hex[:10]}", **app_extra)


def client_for(url: str, world: World, **kw: object) -> NudgeClient:
    return NudgeClient(url, world.app_id, world.app_secret, retry=FAST, **kw)  # type: ignore[arg-type]


async def inbox(admin: httpx.AsyncClient, uid: str) -> list[dict[str, object]]:
    r = await admin.get(f"/v1/users/{uid}/notifications")
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


# --- against the platform ------------------------------------------------------------------


async def test_send_notification_and_status(nudge: Server, admin: httpx.AsyncClient) -> None:
    world = await new_world(admin)
    with client_for(nudge.url, world) as client:
        result = client.send_notification(world.uid, "Your task is due in 1 hour!")
        assert result.notification_id.startswith("n")
        assert result.attempts == 1 and not result.duplicate
        assert result.rate_limit.limit == 10 and result.rate_limit.remaining == 9

        async def delivered() -> bool:
            status = client.notification_status(result.notification_id)
            return [d.state for d in status.deliveries] == ["delivered"]

        await wait_for(delivered)
        status = client.notification_status(result.notification_id)
    assert status.body == "Your task is due in 1 hour!" and status.uid == world.uid
    assert status.deliveries[0].provider == "inbox"
    assert [n["id"] for n in await inbox(admin, world.uid)] == [result.notification_id]


async def test_async_send_with_type_and_data(nudge: Server, admin: httpx.AsyncClient) -> None:
    world = await new_world(admin)
    async with AsyncNudgeClient(nudge.url, world.app_id, world.app_secret, retry=FAST) as client:
        result = await client.send(
            world.uid,
            "Reminder: Your PR review is coming up.",
            type="trigger_event",
            data={"deep_link": "/memories/abc123"},
        )
        status = await client.notification_status(result.notification_id)
    assert status.type == "trigger_event"
    assert status.data["deep_link"] == "/memories/abc123"
    assert status.data["notification_id"] == result.notification_id


async def test_explicit_idempotency_key_returns_the_first_send(
    nudge: Server, admin: httpx.AsyncClient
) -> None:
    world = await new_world(admin)
    with client_for(nudge.url, world) as client:
        first = client.send_notification(world.uid, "first text", idempotency_key="order-42")
        again = client.send_notification(world.uid, "other text", idempotency_key="order-42")
    assert again.notification_id == first.notification_id and again.duplicate
    assert len(await inbox(admin, world.uid)) == 1


async def test_401_unknown_secret_is_not_retried(nudge: Server, admin: httpx.AsyncClient) -> None:
    world = await new_world(admin)
    world.app_secret = "sk_" + "0" * 32
    with ScriptedServer([], upstream=nudge.url) as proxy, client_for(proxy.url, world) as client:
        with pytest.raises(AuthenticationError) as caught:
            client.send_notification(world.uid, "hello there")
        assert len(proxy.seen) == 1
    assert caught.value.status_code == 401 and caught.value.attempts == 1
    assert "unknown or revoked app secret" in caught.value.detail


async def test_401_secret_of_another_app(nudge: Server, admin: httpx.AsyncClient) -> None:
    world, other = await new_world(admin), await new_world(admin)
    async with AsyncNudgeClient(nudge.url, world.app_id, other.app_secret, retry=FAST) as client:
        with pytest.raises(AuthenticationError, match="another app"):
            await client.send_notification(world.uid, "hello there")


async def test_404_user_unknown_or_app_not_installed(
    nudge: Server, admin: httpx.AsyncClient
) -> None:
    world = await new_world(admin)
    other = await new_world(admin)  # a user who has not installed ``world``'s app
    with client_for(nudge.url, world) as client:
        with pytest.raises(NotFoundError, match="not found") as unknown:
            client.send_notification("nobody-" + uuid.uuid4().hex, "hello there")
        with pytest.raises(NotFoundError, match="not installed"):
            client.send_notification(other.uid, "hello there")
        with pytest.raises(NotFoundError):
            client.notification_status("n_does_not_exist")
    assert unknown.value.attempts == 1


async def test_422_empty_or_too_long_message(nudge: Server, admin: httpx.AsyncClient) -> None:
    world = await new_world(admin)
    async with AsyncNudgeClient(nudge.url, world.app_id, world.app_secret, retry=FAST) as client:
        with pytest.raises(ValidationError, match="message") as empty:
            await client.send_notification(world.uid, "   ")
        with pytest.raises(ValidationError, match="over the limit"):
            await client.send(world.uid, "x" * 2001)
    assert empty.value.status_code == 422 and empty.value.attempts == 1
    assert await inbox(admin, world.uid) == []


async def test_429_beyond_the_time_budget_is_raised_at_once(
    nudge: Server, admin: httpx.AsyncClient
) -> None:
    """The platform asks for ~an hour: more than the budget, so no wait, no second attempt."""
    world = await new_world(admin, direct_limit_per_hour=1)
    with ScriptedServer([], upstream=nudge.url) as proxy, client_for(proxy.url, world) as client:
        client.send_notification(world.uid, "the first one")
        with pytest.raises(RateLimitError) as caught:
            client.send_notification(world.uid, "the second one")
        assert len(proxy.seen) == 2
    error = caught.value
    assert error.attempts == 1
    assert error.retry_after is not None and error.retry_after > FAST.total_timeout_s
    assert error.headers["x-ratelimit-remaining"] == "0"
    assert len(await inbox(admin, world.uid)) == 1


async def test_lost_answer_is_retried_with_the_same_key_and_not_duplicated(
    nudge: Server, admin: httpx.AsyncClient
) -> None:
    """The platform accepts the send but the answer is lost (a 503 from a proxy); the retry
    carries the same Idempotency-Key and gets the first notification back."""
    world = await new_world(admin)
    script = [
        Reply(forward=True, status=503, body={"detail": "upstream reset"}),
        Reply(forward=True),
    ]
    with (
        ScriptedServer(script, upstream=nudge.url) as proxy,
        client_for(proxy.url, world) as client,
    ):
        result = client.send_notification(world.uid, "Meeting moved to 3 pm")
        keys = [s.headers.get("idempotency-key") for s in proxy.seen]
    assert result.attempts == 2 and result.duplicate
    assert keys == [result.idempotency_key, result.idempotency_key]
    assert [n["id"] for n in await inbox(admin, world.uid)] == [result.notification_id]


# --- against a scripted server -------------------------------------------------------------


def test_429_retry_after_is_honoured() -> None:
    script = [Reply(429, {"detail": "slow down"}, {"Retry-After": "1"}), Reply(200, OK)]
    with ScriptedServer(script) as server:
        client = NudgeClient(server.url, "app1", "sk_" + "a" * 32, retry=FAST)
        result = client.send_notification("user123", "hello there")
        gap = server.seen[1].at - server.seen[0].at
    assert result.attempts == 2 and result.notification_id == "n_scripted"
    # Without Retry-After the wait would be at most FAST.max_delay_s (0.2 s).
    assert gap >= 1.0


async def test_503_retry_after_is_honoured_async() -> None:
    script = [
        Reply(503, {"detail": "busy"}, {"Retry-After": "1"}),
        Reply(500, {"detail": "oops"}),
        Reply(200, OK),
    ]
    with ScriptedServer(script) as server:
        async with AsyncNudgeClient(server.url, "app1", "sk_" + "a" * 32, retry=FAST) as client:
            result = await client.send("user123", "hello there", type="t")
        seen = list(server.seen)
    assert result.attempts == 3
    assert seen[1].at - seen[0].at >= 1.0
    assert len({s.headers["idempotency-key"] for s in seen}) == 1


def test_5xx_until_attempts_run_out() -> None:
    with ScriptedServer([Reply(502, {"detail": "bad gateway"})] * 4) as server:
        client = NudgeClient(server.url, "app1", "sk_" + "a" * 32, retry=FAST)
        with pytest.raises(ServerError, match="bad gateway") as caught:
            client.send_notification("user123", "hello there")
        assert len(server.seen) == FAST.max_attempts
    assert caught.value.attempts == FAST.max_attempts and caught.value.status_code == 502


def test_non_json_error_answer_keeps_its_text() -> None:
    with ScriptedServer([Reply(500, "<html>proxy down</html>")] * 4) as server:
        client = NudgeClient(server.url, "app1", "sk_" + "a" * 32, retry=FAST)
        with pytest.raises(ServerError, match="proxy down"):
            client.notification_status("n_1")


def test_total_time_budget_bounds_the_retries() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay_s=0.05, total_timeout_s=1.5)
    script = [Reply(503, {"detail": "busy"}, {"Retry-After": "1"})] * 10
    with ScriptedServer(script) as server:
        client = NudgeClient(server.url, "app1", "sk_" + "a" * 32, retry=policy)
        with pytest.raises(ServerError) as caught:
            client.send_notification("user123", "hello there")
        seen = len(server.seen)
    # One wait of 1 s fits in 1.5 s, a second does not: two attempts, then the error.
    assert seen == 2 and caught.value.attempts == 2 and caught.value.retry_after == 1.0


async def test_connection_refused_is_a_transport_error_after_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with AsyncNudgeClient(url, "app1", "sk_" + "a" * 32, retry=FAST) as client:
        with pytest.raises(TransportError, match="could not reach") as caught:
            await client.send_notification("user123", "hello there")
    assert caught.value.attempts == FAST.max_attempts
    assert isinstance(caught.value, NudgeError)


def test_success_that_is_not_nudge_is_a_clear_error() -> None:
    with ScriptedServer([Reply(200, {"hello": "world"})]) as server:
        client = NudgeClient(server.url, "app1", "sk_" + "a" * 32, retry=FAST)
        with pytest.raises(NudgeError, match="base_url"):
            client.send_notification("user123", "hello there")


def test_backoff_is_jittered_exponential_and_bounded() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0, rng=random.Random(7))
    delays = {attempt: [policy.delay(attempt, None) for _ in range(50)] for attempt in (1, 2, 3, 6)}
    for attempt, values in delays.items():
        ceiling = min(8.0, 2 ** (attempt - 1))
        assert all(ceiling / 2 <= d <= ceiling for d in values)
        assert len(set(values)) > 1  # jittered, not fixed
    assert policy.delay(1, retry_after=30.0) == 30.0  # Retry-After is a floor


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="base_url"):
        NudgeClient("localhost:8000", "app1", "sk_x")
    with pytest.raises(ValueError, match="app_secret"):
        NudgeClient("http://localhost:8000", "app1", "")
    assert "sk_" not in repr(NudgeClient("http://localhost:8000", "app1", "sk_" + "a" * 32))
