"""The webhook client: Standard Webhooks signatures, SSRF refusals, the checked address is the one
connected to, no redirects, timeouts, size cap, the per-app breaker, no head-of-line blocking."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from nudge.net.guard import GuardedResolver
from nudge.net.webhooks import WebhookClient, WebhookTarget
from tests.conftest import ServeASGI, make_settings

SECRET = "whsec_" + base64.b64encode(b"a-test-signing-secret-24b").decode()
TARGET = WebhookTarget("app_test", SECRET)


def recorder() -> tuple[FastAPI, list[dict[str, Any]]]:
    """An app that verifies each call's signature and records it."""
    api = FastAPI()
    seen: list[dict[str, Any]] = []
    release = asyncio.Event()
    api.state.release = release

    @api.api_route("/hook", methods=["GET", "POST"])
    async def hook(request: Request) -> Response:
        body = await request.body()
        Webhook(SECRET).verify(body.decode(), dict(request.headers), json_parse=False)
        seen.append(
            {
                "query": dict(request.query_params),
                "body": body,
                "host": request.headers["host"],
                "headers": dict(request.headers),
            }
        )
        return Response('{"ok": true}', media_type="application/json")

    @api.post("/empty")
    async def empty() -> Response:
        return Response(status_code=204)

    @api.post("/redirect")
    async def redirect() -> Response:
        return Response(status_code=307, headers={"location": "/hook"})

    @api.post("/fail")
    async def fail() -> Response:
        return Response("boom", status_code=500)

    @api.post("/slow")
    async def slow() -> Response:
        await asyncio.sleep(5)
        return Response("late")

    @api.post("/blocked")
    async def blocked() -> Response:
        await release.wait()
        return Response("{}")

    @api.post("/huge")
    async def huge() -> Response:
        return Response(b"x" * 5000)

    return api, seen


def client(tmp_path: Path, **overrides: Any) -> WebhookClient:
    values = {"webhook_timeout_s": 0.5, "webhook_max_answer_bytes": 4096, **overrides}
    return WebhookClient(make_settings(tmp_path, **values))


async def test_calls_are_signed_per_standard_webhooks(tmp_path: Path) -> None:
    api, seen = recorder()
    webhooks = client(tmp_path)
    async with ServeASGI(api) as served:
        payload = {"session_id": "s1", "segments": [{"text": "héllo {{user_name}}"}]}
        result = await webhooks.send(
            TARGET,
            "POST",
            served.url + "/hook",
            params={"session_id": "s1", "uid": "u1"},
            payload=payload,
        )
        assert result.ok and result.status == 200, result
        assert result.address == f"127.0.0.1:{served.port}"
        (call,) = seen
        assert call["query"] == {"session_id": "s1", "uid": "u1"}
        assert json.loads(call["body"]) == payload
        assert call["headers"]["webhook-id"] == result.message_id
        assert call["headers"]["webhook-signature"].startswith("v1,")
        # The same headers do not verify under another secret.
        other = "whsec_" + base64.b64encode(b"another-secret-of-24-byte").decode()
        with pytest.raises(WebhookVerificationError):
            Webhook(other).verify(call["body"].decode(), call["headers"])
        get = await webhooks.send(TARGET, "GET", served.url + "/hook", params={"uid": "u1"})
        assert get.ok and seen[-1]["body"] == b""
    await webhooks.aclose()


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "[::1]",
        "10.1.2.3",
        "192.168.0.10",
        "169.254.169.254",
        "100.64.0.1",
        "[::ffff:127.0.0.1]",
        "0.0.0.0",
        "localhost",
    ],
)
async def test_private_targets_are_refused(tmp_path: Path, host: str) -> None:
    webhooks = client(tmp_path, allow_private_webhooks=False)
    result = await webhooks.send(TARGET, "POST", f"http://{host}:9/hook", params={}, payload={})
    assert not result.ok and result.status is None
    assert result.error is not None and result.error.startswith("refused:"), result.error
    assert "NUDGE_ALLOW_PRIVATE_WEBHOOKS" in result.error or "unicast" in result.error
    await webhooks.aclose()


async def test_connects_to_the_checked_address_and_resolves_once(tmp_path: Path) -> None:
    """A name is resolved once per connection, by the guard, and that answer is used: a resolver
    that would switch to another address later (DNS rebinding) is never asked again."""
    api, seen = recorder()
    answers = [["127.0.0.1"], ["10.9.9.9"]]
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked) - 1, 1)]

    resolver = GuardedResolver(True, cache_ttl_s=0, resolve=rebinding)
    webhooks = WebhookClient(make_settings(tmp_path), resolver=resolver)
    async with ServeASGI(api) as served:
        result = await webhooks.send(
            TARGET, "POST", f"http://app.example:{served.port}/hook", params={}, payload={}
        )
        assert result.ok, result
        assert asked == ["app.example"]
        assert result.address == f"127.0.0.1:{served.port}"
        assert seen[0]["host"] == f"app.example:{served.port}"  # the name, not the address
    await webhooks.aclose()

    # A name with any private answer is refused when private targets are not allowed.
    async def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "127.0.0.1"]

    strict = WebhookClient(
        make_settings(tmp_path, allow_private_webhooks=False),
        resolver=GuardedResolver(False, resolve=mixed),
    )
    refused = await strict.send(TARGET, "POST", "http://mixed.example/hook", params={}, payload={})
    assert refused.error is not None and "127.0.0.1 is a loopback address" in refused.error
    await strict.aclose()


async def test_answers_redirects_timeouts_and_size(tmp_path: Path) -> None:
    api, seen = recorder()
    webhooks = client(tmp_path)
    async with ServeASGI(api) as served:
        send = lambda path: webhooks.send(  # noqa: E731
            TARGET, "POST", served.url + path, params={}, payload={}
        )
        empty = await send("/empty")
        assert empty.ok and empty.status == 204 and empty.body == b""
        redirect = await send("/redirect")
        assert not redirect.ok and redirect.status == 307
        assert "redirect" in (redirect.error or "") and seen == []  # not followed
        failed = await send("/fail")
        assert not failed.ok and failed.error == "answered HTTP 500" and failed.body == b"boom"
        slow = await send("/slow")
        assert not slow.ok and slow.error == "no complete answer within 0.5 s"
        huge = await send("/huge")
        assert not huge.ok and "over 4096 bytes" in (huge.error or "")
        refused = await webhooks.send(TARGET, "POST", "http://127.0.0.1:1/x", params={}, payload={})
        assert not refused.ok and (refused.error or "").startswith("cannot connect to 127.0.0.1:1")
    await webhooks.aclose()


async def test_breaker_opens_skips_and_recovers(tmp_path: Path) -> None:
    api, seen = recorder()
    webhooks = client(tmp_path, webhook_breaker_failures=2, webhook_breaker_cooldown_s=0.3)
    async with ServeASGI(api) as served:

        async def send(path: str) -> Any:
            return await webhooks.send(TARGET, "POST", served.url + path, params={}, payload={})

        assert not (await send("/fail")).skipped
        assert not (await send("/fail")).skipped
        skipped = await send("/hook")
        assert skipped.skipped and skipped.first_skip and "circuit open" in (skipped.error or "")
        again = await send("/hook")
        assert again.skipped and not again.first_skip
        assert seen == []  # nothing reached the app while open
        other = await webhooks.send(
            WebhookTarget("app_other", SECRET), "POST", served.url + "/hook", params={}, payload={}
        )
        assert other.ok  # another app's circuit is its own
        await asyncio.sleep(0.35)
        trial = await send("/hook")
        assert trial.ok and not trial.skipped
        assert (await send("/hook")).ok
    await webhooks.aclose()


async def test_a_blocked_app_does_not_hold_up_another(tmp_path: Path) -> None:
    """150 calls hang on one app (more than a default connection pool holds); a call to another
    app still completes while they hang."""
    api, seen = recorder()
    webhooks = client(tmp_path, webhook_timeout_s=30)
    async with ServeASGI(api) as served:
        slow_target = WebhookTarget("app_slow", SECRET)
        hanging = [
            asyncio.create_task(
                webhooks.send(slow_target, "POST", served.url + "/blocked", params={}, payload={})
            )
            for _ in range(150)
        ]
        await asyncio.sleep(0.2)
        fast = await asyncio.wait_for(
            webhooks.send(TARGET, "POST", served.url + "/hook", params={}, payload={}), 10
        )
        assert fast.ok and not any(t.done() for t in hanging)
        api.state.release.set()
        results = await asyncio.gather(*hanging)
        assert all(r.ok for r in results)
    await webhooks.aclose()


async def test_an_apps_lane_bounds_its_calls(tmp_path: Path) -> None:
    """At most N calls at once per app; beyond the waiting bound, calls are dropped (said so)."""
    api, seen = recorder()
    webhooks = client(
        tmp_path,
        webhook_timeout_s=30,
        webhook_concurrency_per_app=2,
        webhook_max_waiting_per_app=3,
    )
    async with ServeASGI(api) as served:
        calls = [
            asyncio.create_task(
                webhooks.send(TARGET, "POST", served.url + "/blocked", params={}, payload={})
            )
            for _ in range(5)
        ]
        await asyncio.sleep(0.3)
        dropped = await webhooks.send(TARGET, "POST", served.url + "/hook", params={}, payload={})
        assert not dropped.ok and "3 calls to this app are already waiting" in (dropped.error or "")
        assert seen == []
        api.state.release.set()
        assert all(r.ok for r in await asyncio.gather(*calls))
    await webhooks.aclose()
