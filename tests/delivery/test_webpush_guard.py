"""Web Push endpoints are someone else's choice: the allow-list and the outbound-address guard
apply on both push transports, at registration and at every send, and a refused endpoint fails
its delivery at once (no 24 h of retries) without a connection being made."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from nudge.config import Settings
from nudge.delivery.providers.base import Outcome, ProviderDeps, SendResult, Target
from nudge.delivery.providers.webpush import WebPushProvider
from nudge.net.guard import GuardedResolver
from tests.conftest import make_world, running
from tests.delivery.conftest import push_message, vapid_public
from tests.delivery.test_delivery_flow import add_device, notify, settled
from tests.fakes.webpush import FakePushService
from tests.net.conftest import REFUSED_FORMS, Listener, resolve


async def send(
    deps: ProviderDeps, keys: Mapping[str, str], endpoint: str, **settings: Any
) -> SendResult:
    """One send to ``endpoint`` with private targets refused and any host allowed (unless
    ``settings`` say otherwise)."""
    values = {"allow_private_webhooks": False, "webpush_allowed_hosts": "*", **settings}
    configured = ProviderDeps(deps.settings.model_copy(update=values), deps.bus)
    guard = GuardedResolver(configured.settings.allow_private_webhooks, resolve=resolve)
    provider = WebPushProvider.from_deps(configured, guard=guard)
    subscription = {"endpoint": endpoint, "keys": dict(keys)}
    try:
        return await provider.send(
            push_message(), Target("webpush", "dev_1", endpoint, subscription)
        )
    finally:
        await provider.aclose()


@pytest.fixture
def keys(push_service: FakePushService, vapid_key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """Usable subscription keys (the payload is encrypted before any connection)."""
    return dict(push_service.subscribe(vapid_public(vapid_key)).info()["keys"])


@pytest.mark.parametrize("host", REFUSED_FORMS)
async def test_refused_forms_fail_at_once_without_a_connection(
    deps: ProviderDeps, keys: dict[str, str], listener: Listener, host: str
) -> None:
    result = await send(deps, keys, f"http://{host}:{listener.port}/push/x")
    assert result.outcome is Outcome.FAILED, result
    assert result.reason.startswith("Web Push endpoint refused:"), result.reason
    assert "NUDGE_ALLOW_PRIVATE_WEBHOOKS" in result.reason
    assert listener.connections == 0


async def test_an_allowed_host_name_is_still_guarded(
    deps: ProviderDeps, keys: dict[str, str], listener: Listener
) -> None:
    """The allow-list is not the guard: fcm.googleapis.com resolving here is refused too."""
    result = await send(
        deps,
        keys,
        f"http://fcm.googleapis.com:{listener.port}/fcm/send/x",
        webpush_allowed_hosts=Settings().webpush_allowed_hosts,  # the default list
    )
    assert result.outcome is Outcome.FAILED and "127.0.0.1 is a loopback" in result.reason
    assert listener.connections == 0


async def test_the_listener_is_reached_when_private_targets_are_allowed(
    deps: ProviderDeps, keys: dict[str, str], listener: Listener
) -> None:
    """The control: the same sends, allowed, reach the listener (which answers 201), and the
    name, not the address connected to, is what the request says in ``Host``."""
    for host in ("localhost", "rebind.example"):
        endpoint = f"http://{host}:{listener.port}/push/x"
        result = await send(deps, keys, endpoint, allow_private_webhooks=True)
        assert result.outcome is Outcome.DELIVERED, result
    assert listener.connections == 2
    assert listener.hosts == [f"localhost:{listener.port}", f"rebind.example:{listener.port}"]


async def test_a_host_off_the_allow_list_fails_without_a_connection(
    deps: ProviderDeps, keys: dict[str, str], listener: Listener
) -> None:
    result = await send(
        deps,
        keys,
        f"http://localhost:{listener.port}/push/x",
        allow_private_webhooks=True,
        webpush_allowed_hosts="fcm.googleapis.com",
    )
    assert result.outcome is Outcome.FAILED
    assert "localhost is not one of the allowed hosts (fcm.googleapis.com)" in result.reason
    assert listener.connections == 0


@pytest.mark.parametrize(
    ("endpoint", "words"),
    [
        ("http://push.example:99999/x", "Port out of range"),
        ("http://pu sh.example/x", "not a valid host name"),
        ("http://push.example:0/x", "port 0"),
    ],
)
async def test_an_endpoint_no_client_can_use_removes_the_device(
    deps: ProviderDeps, keys: dict[str, str], endpoint: str, words: str
) -> None:
    result = await send(deps, keys, endpoint)
    assert result.outcome is Outcome.TOKEN_INVALID and words in result.reason, result


async def test_a_name_that_does_not_resolve_is_retried(
    deps: ProviderDeps, keys: dict[str, str]
) -> None:
    result = await send(deps, keys, "https://gone.example/push/x")
    assert result.outcome is Outcome.RETRY and "cannot resolve gone.example" in result.reason


async def test_registration_checks_the_allow_list_and_the_delivery_fails_with_the_reason(
    settings: Settings, keys: dict[str, str], listener: Listener
) -> None:
    """End to end: with the default allow-list the endpoint is refused at registration (422 on
    the field); with any host allowed it registers, and its delivery ends ``failed`` at the
    first attempt, with the reason, and nothing reaches the listener."""
    endpoint = f"http://0x7f.1:{listener.port}/push/x"
    device = {"platform": "webpush", "subscription": {"endpoint": endpoint, "keys": keys}}
    strict = settings.model_copy(
        update={
            "allow_private_webhooks": False,
            "webpush_allowed_hosts": Settings().webpush_allowed_hosts,
        }
    )
    async with running(strict) as (_, client):
        world = await make_world(client)
        r = await client.post(f"/v1/users/{world.uid}/devices", json=device)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert detail.startswith("subscription.endpoint: 0x7f.1 is not one of the allowed hosts")

    anywhere = strict.model_copy(update={"webpush_allowed_hosts": "*"})
    async with running(anywhere) as (_, client):
        await add_device(client, world.uid, **device)
        sent = await notify(client, world, "Time to stretch!")
        delivery = await settled(client, world, sent["notification_id"], "webpush")
    assert delivery["state"] == "failed" and delivery["attempts"] == 1, delivery
    assert "0x7f.1 refused: 127.0.0.1 is a loopback address" in delivery["last_error"]
    assert listener.connections == 0


async def test_an_ipv6_literal_endpoint_in_development_is_not_retried(
    deps: ProviderDeps, keys: dict[str, str]
) -> None:
    """Allowed by the guard in development, but no VAPID audience can name it: a permanent
    outcome, not an exception (which the worker would retry for 24 h)."""
    result = await send(deps, keys, "http://[::1]:9/push/x", allow_private_webhooks=True)
    assert result.outcome is Outcome.TOKEN_INVALID and "no VAPID signature" in result.reason
