"""Issue 17 at the app API: priority, ttl and send_at on both send routes and in webhook answers,
the status's one ``state``, cancelling what has not gone, and high priority first in the queue;
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from nudge.core.notifications import status_summary
from nudge.delivery import queue
from nudge.platform import Platform
from nudge.proactive.plan import parse_answer
from nudge.sdk import AsyncNudgeClient, webhook
from nudge.sdk.errors import ConflictError
from tests.api.test_direct import assert_rate_headers, auth, row_counts
from tests.conftest import ServeASGI, World, make_settings, make_world, running, wait_for
from tests.proactive.helpers import (
    create_app,
    create_user,
    install,
    manifest,
    post_segments,
    wait_traces,
)


@dataclass
class Env:
    client: httpx.AsyncClient
    platform: Platform
    world: World


async def _env(tmp_path: Path, database_url: str, **settings: Any) -> AsyncIterator[Env]:
    overrides = {"database_url": database_url, **settings}
    async with running(make_settings(tmp_path, **overrides)) as (platform, client):
        yield Env(client, platform, await make_world(client))


@pytest.fixture
async def env(tmp_path: Path, database_url: str) -> AsyncIterator[Env]:
    """An app and a user who installed it, with a delivery worker running."""
    async for e in _env(tmp_path, database_url):
        yield e


@pytest.fixture
async def api_only(tmp_path: Path, database_url: str) -> AsyncIterator[Env]:
    """The same without a worker: nothing is sent, the queue is left for the test to read."""
    async for e in _env(tmp_path, database_url, role="api"):
        yield e


def iso(seconds_from_now: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds_from_now)).isoformat()


async def send(env: Env, route: str, message: str, **options: Any) -> httpx.Response:
    """Send through the Omi route (options as query parameters) or /api/notifications/send."""
    w, c = env.world, env.client
    if route == "query":
        params = {"uid": w.uid, "message": message, **options}
        return await c.post(
            f"/v2/integrations/{w.app_id}/notification", params=params, headers=auth(w.app_secret)
        )
    body = {"user_id": w.uid, "message": message, **options}
    return await c.post("/api/notifications/send", json=body, headers=auth(w.app_secret))


def status_url(w: World, nid: str) -> str:
    return f"/v2/integrations/{w.app_id}/notifications/{nid}"


async def status(env: Env, nid: str) -> dict[str, Any]:
    r = await env.client.get(status_url(env.world, nid), headers=auth(env.world.app_secret))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def cancel(env: Env, nid: str, app: World | None = None) -> httpx.Response:
    w = app or env.world
    return await env.client.delete(status_url(w, nid), headers=auth(w.app_secret))


@pytest.mark.parametrize("route", ["query", "body"])
async def test_each_option_is_accepted_and_stored(api_only: Env, route: str) -> None:
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    r = await send(api_only, route, "Later, loud", priority="high", ttl=600, send_at=at.isoformat())
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"status", "notification_id", "devices"}
    s = await status(api_only, r.json()["notification_id"])
    assert s["priority"] == "high"
    assert s["send_at"] == at.timestamp()
    assert s["expires_at"] == at.timestamp() + 600  # the ttl counts from when it is due
    assert s["state"] == "scheduled"
    assert s["reason"] == f"scheduled for {at.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    # A scheduled high-priority send never goes early: due at its time.
    assert [d["next_attempt_at"] for d in s["deliveries"]] == [at.timestamp()]

    # Another offset is the same instant; a time already past is "now".
    paris = (at + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=1)))
    r = await send(api_only, route, "Later, in Paris", send_at=paris.isoformat(), priority="low")
    s = await status(api_only, r.json()["notification_id"])
    assert (s["send_at"], s["priority"], s["expires_at"]) == (at.timestamp() + 60, "low", None)
    r = await send(api_only, route, "Past is now", send_at="2020-01-01T00:00:00Z", ttl=60)
    s = await status(api_only, r.json()["notification_id"])
    assert s["send_at"] is None and s["state"] == "queued"
    assert s["expires_at"] == pytest.approx(s["created_at"] + 60, abs=1)


BAD_QUERY: list[tuple[str, str, str]] = [
    ("priority", "urgent", "priority: must be one of low, normal, high"),
    ("priority", "", "priority: must be one of"),
    ("priority", "HIGH", "priority: must be one of"),
    ("ttl", "0", "ttl: must be a whole number of seconds from 1 to 2419200"),
    ("ttl", "2419201", "ttl: must be a whole number"),
    ("ttl", "-5", "ttl: must be a whole number"),
    ("ttl", "1.5", "ttl: must be a whole number"),
    ("ttl", "ten", "ttl: must be a whole number"),
    ("ttl", "9" * 5000, "ttl: must be a whole number"),
    ("send_at", "tomorrow", "send_at: must be an ISO 8601 time with its offset"),
    ("send_at", "", "send_at: must be an ISO 8601 time"),
    ("send_at", "2030-01-01T09:00:00", "send_at: give the time's offset"),
    ("send_at", "2030-01-01", "send_at: give the time's offset"),
    # An unencoded + arrives as a space.
    ("send_at", "2030-01-01T09:00:00 01:00", "write + as %2B"),
    ("send_at", "2030-13-01T09:00:00Z", "send_at: must be an ISO 8601 time"),
    ("send_at", "9999-12-31T23:59:59Z", "send_at: at most 30 days ahead"),
]
BAD_BODY: list[tuple[str, Any, str]] = [
    ("priority", "urgent", "priority: must be one of low, normal, high"),
    ("priority", 3, "priority"),
    ("ttl", 0, "ttl"),
    ("ttl", 2419201, "ttl"),
    ("ttl", "60", "ttl"),
    ("ttl", 1.5, "ttl"),
    ("ttl", True, "ttl"),
    ("send_at", 1767225600, "send_at"),
    ("send_at", "2030-01-01T09:00:00", "send_at: give the time's offset"),
]


async def test_each_bad_value_is_a_422_naming_the_field_and_writes_nothing(
    api_only: Env,
) -> None:
    before = await row_counts(api_only.platform)
    far = ("send_at", iso(31 * 86_400), "send_at: at most 30 days ahead")
    for route, cases in (("query", [*BAD_QUERY, far]), ("body", [*BAD_BODY, far])):
        for name, value, words in cases:
            r = await send(api_only, route, f"Bad {name}", **{name: value})
            assert r.status_code == 422, (route, name, value, r.text)
            assert words in r.json()["detail"], (route, name, value, r.json())
            assert r.json()["detail"].startswith(name), r.json()
            if route == "query":
                assert_rate_headers(r)
    assert await row_counts(api_only.platform) == before
    # The secret is still checked first (as for every other field).
    w = api_only.world
    r = await api_only.client.post(
        f"/v2/integrations/{w.app_id}/notification",
        params={"uid": w.uid, "message": "Hi", "ttl": "0"},
        headers=auth("sk_" + "0" * 32),
    )
    assert r.status_code == 401


async def test_a_send_without_options_is_as_before(env: Env) -> None:
    r = await send(env, "query", "Plain")
    assert r.status_code == 200 and set(r.json()) == {"status", "notification_id", "devices"}
    nid = r.json()["notification_id"]

    async def delivered() -> dict[str, Any] | None:
        s = await status(env, nid)
        return s if s["state"] == "delivered" else None

    s = await wait_for(delivered)
    assert (s["priority"], s["send_at"], s["expires_at"], s["hold"]) == ("normal", None, None, "")
    assert s["reason"] == "" and [d["state"] for d in s["deliveries"]] == ["delivered"]


async def test_a_scheduled_send_goes_only_at_its_time(env: Env) -> None:
    for token in ("tok-a", "tok-b"):
        r = await env.client.post(
            f"/v1/users/{env.world.uid}/devices", json={"platform": "log", "token": token}
        )
        assert r.status_code == 201
    at = datetime.now(UTC) + timedelta(seconds=2)
    r = await send(env, "body", "In two seconds", send_at=at.isoformat())
    assert r.status_code == 200 and r.json()["devices"] == 2
    nid = r.json()["notification_id"]
    first = await status(env, nid)
    if time.time() < at.timestamp():  # read before its time (a very slow machine may not)
        assert first["state"] == "scheduled"
        assert {d["state"] for d in first["deliveries"]} == {"queued"}

    async def delivered() -> dict[str, Any] | None:
        s = await status(env, nid)
        return s if s["state"] == "delivered" else None

    done = await wait_for(delivered, timeout=20)
    assert len(done["deliveries"]) == 3
    for d in done["deliveries"]:
        assert d["state"] == "delivered" and d["delivered_at"] >= at.timestamp()


async def test_cancel_before_it_goes_then_409_and_404(env: Env) -> None:
    r = await send(env, "query", "Tomorrow maybe", send_at=iso(3600))
    nid = r.json()["notification_id"]
    r = await cancel(env, nid)
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["id"] == nid and s["state"] == "cancelled"
    assert s["reason"] == "cancelled by the app"
    assert [(d["state"], d["next_attempt_at"]) for d in s["deliveries"]] == [("cancelled", None)]
    assert (await status(env, nid))["state"] == "cancelled"
    again = await cancel(env, nid)
    assert again.status_code == 409
    assert "nothing left to cancel (it is cancelled)" in again.json()["detail"]

    # Another app's secret and path, an unknown id, a missing secret.
    other = await make_world(env.client, uid="other-user")
    assert (await cancel(env, nid, app=other)).status_code == 404
    assert (await cancel(env, "n_unknown")).status_code == 404
    r = await env.client.delete(status_url(env.world, nid), headers={"Authorization": ""})
    assert r.status_code == 401

    # One that has gone: nothing to cancel, and it stays delivered.
    nid = (await send(env, "body", "Right now")).json()["notification_id"]

    async def delivered() -> bool:
        return bool((await status(env, nid))["state"] == "delivered")

    await wait_for(delivered)
    r = await cancel(env, nid)
    assert r.status_code == 409
    assert "nothing left to cancel (it is delivered)" in r.json()["detail"]
    assert (await status(env, nid))["deliveries"][0]["state"] == "delivered"


async def test_a_cancelled_scheduled_send_is_never_sent(env: Env) -> None:
    at = datetime.now(UTC) + timedelta(seconds=1)
    nid = (await send(env, "query", "Soon, or not", send_at=at.isoformat())).json()[
        "notification_id"
    ]
    assert (await cancel(env, nid)).status_code == 200
    # A later send goes through the same worker: by the time it is delivered, the cancelled one
    # has been due for a while.
    later = datetime.now(UTC) + timedelta(seconds=2)
    probe = (await send(env, "query", "Probe", send_at=later.isoformat())).json()["notification_id"]

    async def probe_delivered() -> bool:
        return bool((await status(env, probe))["state"] == "delivered")

    await wait_for(probe_delivered, timeout=20)
    s = await status(env, nid)
    assert s["state"] == "cancelled" and s["deliveries"][0]["delivered_at"] is None


async def test_expiry_shows_in_the_status(api_only: Env) -> None:
    nid = (await send(api_only, "body", "Short-lived", ttl=1)).json()["notification_id"]
    s = await status(api_only, nid)
    assert s["expires_at"] == pytest.approx(s["created_at"] + 1, abs=0.01)

    async def expired() -> dict[str, Any] | None:
        s = await status(api_only, nid)
        return s if s["state"] == "expired" else None

    s = await wait_for(expired, timeout=10)
    assert (
        s["reason"].startswith("its ttl ran out at ") and "before it could be sent" in s["reason"]
    )
    # What has expired may still be cancelled (nothing of it went).
    assert (await cancel(api_only, nid)).json()["state"] == "cancelled"


async def test_high_priority_drains_first(api_only: Env) -> None:
    normal = [
        (await send(api_only, "query", f"Normal {i}")).json()["notification_id"] for i in range(3)
    ]
    low = (await send(api_only, "query", "Low one", priority="low")).json()["notification_id"]
    high = (await send(api_only, "body", "High one", priority="high")).json()["notification_id"]
    db = api_only.platform.db
    jobs = (await queue.claim(db, "test-worker", 1, lease_s=60)).jobs
    assert [j.message.notification_id for j in jobs] == [high]
    assert jobs[0].message.priority == "high"
    rest = [(await queue.claim(db, "test-worker", 1, lease_s=60)).jobs[0] for _ in range(4)]
    assert [j.message.notification_id for j in rest] == [*normal, low]  # the rest as they came
    # The status reads well: claimed is "sending", and no time before it was made.
    assert (await status(api_only, high))["state"] == "sending"
    nid = (await send(api_only, "query", "High two", priority="high")).json()["notification_id"]
    s = await status(api_only, nid)
    assert s["state"] == "queued"
    assert s["deliveries"][0]["next_attempt_at"] >= s["created_at"]


async def test_the_status_says_muted_and_held_with_why(api_only: Env) -> None:
    w, c = api_only.world, api_only.client
    r = await c.post(f"/v1/users/{w.uid}/devices", json={"platform": "log", "token": "tok"})
    assert r.status_code == 201
    prefs = f"/v1/users/{w.uid}/preferences"
    r = await c.put(prefs, json={"apps": {w.app_id: {"muted": True}}})
    assert r.status_code == 200, r.text
    s = await status(api_only, (await send(api_only, "query", "Muted")).json()["notification_id"])
    assert (s["state"], s["hold"]) == ("muted", "muted") and s["reason"] == s["hold_reason"] != ""
    r = await c.put(prefs, json={"apps": {w.app_id: {"digest_s": 3600}}})
    assert r.status_code == 200, r.text
    nid = (await send(api_only, "query", "Held")).json()["notification_id"]
    s = await status(api_only, nid)
    assert (s["state"], s["hold"]) == ("held", "digest")
    assert s["reason"] == s["hold_reason"] and s["reason"].startswith("digest until")
    # Cancelling a held push: the inbox copy may have gone, the push has not.
    s = (await cancel(api_only, nid)).json()
    assert s["state"] == "cancelled"
    assert {d["provider"]: d["state"] for d in s["deliveries"]}["log"] == "cancelled"


def row(state: str, next_attempt_at: float = 0.0, last_error: str = "") -> SimpleNamespace:
    return SimpleNamespace(state=state, next_attempt_at=next_attempt_at, last_error=last_error)


NOW = 1_000_000.0
NOTE = {"hold": "", "hold_reason": "", "send_at": None, "expires_at": None}


@pytest.mark.parametrize(
    ("note", "rows", "expected"),
    [
        ({}, [row("delivered"), row("merged")], ("delivered", "")),
        (
            {},
            [row("delivered"), row("failed", last_error="410 gone")],
            ("partly_delivered", "410 gone"),
        ),
        ({}, [row("failed", last_error="bad key"), row("token-removed")], ("failed", "bad key")),
        ({}, [row("delivered"), row("sending"), row("queued")], ("sending", "")),
        ({}, [row("retrying", NOW + 5, "503")], ("queued", "503")),
        ({}, [row("queued", NOW - 60)], ("queued", "")),
        (
            {"send_at": NOW + 60},
            [row("queued", NOW + 60)],
            ("scheduled", "scheduled for 1970-01-12T13:47:40Z"),
        ),
        (
            {"hold": "quiet", "hold_reason": "quiet hours until 07:00 UTC"},
            [row("delivered"), row("held", NOW + 60)],
            ("held", "quiet hours until 07:00 UTC"),
        ),
        (  # its window has ended: waiting for a worker like any queued push
            {"hold": "quiet", "hold_reason": "q"},
            [row("delivered"), row("held", NOW - 1)],
            ("queued", ""),
        ),
        (
            {"hold": "digest", "hold_reason": "d"},
            [row("held", NOW - 1), row("held", NOW + 60)],
            ("held", "d"),
        ),
        (
            {"send_at": NOW - 60},
            [row("retrying", NOW + 5, "timeout")],
            ("queued", "timeout"),
        ),
        (
            {"hold": "muted", "hold_reason": "app muted by the user"},
            [row("queued")],
            ("muted", "app muted by the user"),
        ),
        (
            {"expires_at": NOW - 1},
            [row("queued", NOW - 5)],
            ("expired", "its ttl ran out at 1970-01-12T13:46:39Z before it could be sent"),
        ),
        (
            {"expires_at": NOW - 1},
            [row("delivered"), row("expired")],
            ("expired", "its ttl ran out at 1970-01-12T13:46:39Z before it could be sent"),
        ),
        (
            {},
            [row("delivered"), row("cancelled")],
            ("cancelled", "cancelled by the app; 1 of 2 deliveries had gone before"),
        ),
    ],
)
def test_the_status_summary(
    note: dict[str, Any], rows: list[SimpleNamespace], expected: tuple[str, str]
) -> None:
    assert status_summary(NOTE | note, rows, NOW) == expected


async def test_the_sdk_sends_with_options_and_cancels(api_only: Env) -> None:
    w = api_only.world
    async with AsyncNudgeClient(
        "http://nudge.test", w.app_id, w.app_secret, http=api_only.client
    ) as sdk:
        at = datetime.now(UTC) + timedelta(hours=1)
        sent = await sdk.send_notification(
            w.uid, "From the SDK", priority="high", ttl=120, send_at=at
        )
        status = await sdk.notification_status(sent.notification_id)
        assert (status.priority, status.state) == ("high", "scheduled")
        assert status.expires_at == pytest.approx(at.timestamp() + 120)
        typed = await sdk.send(w.uid, "Typed, from the SDK", type="tip", priority="low", ttl=60)
        status = await sdk.notification_status(typed.notification_id)
        assert (status.priority, status.type, status.state, status.send_at) == (
            "low",
            "tip",
            "queued",
            None,
        )
        cancelled = await sdk.cancel_notification(sent.notification_id)
        assert cancelled.state == "cancelled" and cancelled.reason == "cancelled by the app"
        with pytest.raises(ConflictError) as refused:
            await sdk.cancel_notification(sent.notification_id)
        assert refused.value.status_code == 409
        with pytest.raises(ValueError, match="priority"):
            await sdk.send_notification(w.uid, "Never sent", priority="loud")
        with pytest.raises(ValueError, match="ttl"):
            await sdk.send(w.uid, "Never sent", ttl=0)


async def test_nudge_send_takes_the_options(
    api_only: Env, database_url: str, tmp_path: Path
) -> None:
    w = api_only.world
    env = {**os.environ, "NUDGE_DATABASE_URL": database_url, "NUDGE_DATA_DIR": str(tmp_path)}

    def nudge_send(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "nudge.cli", "send", w.app_id, w.uid, *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    at = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    out = nudge_send(
        "From the CLI", "--priority", "high", "--ttl", "30", "--send-at", at.isoformat()
    )
    assert out.returncode == 0, out.stderr
    s = await status(api_only, json.loads(out.stdout)["notification_id"])
    assert (s["priority"], s["send_at"], s["expires_at"]) == (
        "high",
        at.timestamp(),
        at.timestamp() + 30,
    )
    for args, words in (
        (("--send-at", "tomorrow"), "send_at: must be an ISO 8601 time"),
        (("--priority", "loud"), "priority: must be one of"),
        (("--ttl", "0"), "ttl: must be a whole number"),
    ):
        bad = nudge_send("Bad CLI", *args)
        assert bad.returncode == 2 and words in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr


# Webhook answers.


def wire(answer: webhook.Answer) -> bytes:
    return json.dumps(answer.body).encode()


def test_answers_carry_priority_and_ttl() -> None:
    answer = parse_answer(wire(webhook.message("Stand up and stretch", priority="high", ttl=300)))
    assert (answer.message_sending.priority, answer.message_sending.ttl) == ("high", 300)
    answer = parse_answer(wire(webhook.proactive("Tip for {{user_name}}", ttl=60, priority="low")))
    assert (answer.sending.priority, answer.sending.ttl) == ("low", 60)
    assert answer.message_sending.priority == "normal"
    plain = parse_answer(b'{"message": "Stand up and stretch"}')
    assert (plain.message_sending.priority, plain.message_sending.ttl) == ("normal", None)
    for body, words in (
        (b'{"message": "Stand up now", "priority": "urgent"}', "priority: must be one of"),
        (b'{"message": "Stand up now", "ttl": 0}', "ttl: must be a whole number"),
        (b'{"message": "Stand up now", "ttl": "60"}', "ttl: must be a whole number"),
        (b'{"notification": {"prompt": "Hello there", "ttl": 1.5}}', "notification.ttl: must"),
        (b'{"notification": {"prompt": "Hello there", "priority": 1}}', "notification.priority"),
    ):
        assert words in (parse_answer(body).error or ""), body
    with pytest.raises(ValueError, match="priority"):
        webhook.message("Stand up and stretch", priority="loud")
    with pytest.raises(ValueError, match="ttl"):
        webhook.proactive("Tip for {{user_name}}", ttl=0)


def answering_app() -> FastAPI:
    api = FastAPI()

    @api.post("/message")
    async def message() -> dict[str, Any]:
        return webhook.message("Time for a short walk", priority="high", ttl=900).body

    @api.post("/proactive")
    async def proactive() -> dict[str, Any]:
        return webhook.proactive("A short tip for {{user_name}}", priority="low", ttl=120).body

    @api.post("/bad")
    async def bad() -> dict[str, Any]:
        return {"message": "Time for a short walk", "priority": "urgent"}

    return api


async def answering_apps(
    client: httpx.AsyncClient, uid: str, url: str, cases: tuple[str, ...]
) -> dict[str, str]:
    """A new user ``uid`` with one app per route of ``answering_app`` (case -> app id)."""
    await create_user(client, uid)
    apps = {}
    for case in cases:
        body = manifest(case, f"{url}/{case}", scopes=["user_name"])
        apps[case] = (await create_app(client, body))["app_id"]
        await install(client, uid, apps[case], ["user_name"])
    return apps


async def test_webhook_answers_send_with_their_priority_and_ttl(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    async with running(settings) as (_, client), ServeASGI(answering_app()) as served:
        apps = await answering_apps(client, "walker", served.url, ("message", "proactive", "bad"))
        await post_segments(client, "walker", "walk", "I have been sitting all day.")
        notes: dict[str, dict[str, Any]] = {}
        for case, outcome in (("message", "message_sent"), ("proactive", "notified")):
            (trace,) = await wait_traces(client, apps[case], 1)
            assert trace["outcome"] == outcome, trace
            r = await client.get("/v1/users/walker/notifications")
            (notes[case],) = [n for n in r.json()["items"] if n["app_id"] == apps[case]]
        message, proactive = notes["message"], notes["proactive"]
        assert message["priority"] == "high"
        assert message["expires_at"] == pytest.approx(message["created_at"] + 900, abs=0.01)
        assert proactive["priority"] == "low"
        assert proactive["expires_at"] == pytest.approx(proactive["created_at"] + 120, abs=0.01)
        (trace,) = await wait_traces(client, apps["bad"], 1)
        assert trace["outcome"] == "invalid_answer"
        assert "priority: must be one of low, normal, high" in trace["error"]
        assert trace["notification_id"] is None


async def test_a_webhook_answer_for_a_user_who_turned_proactive_off_is_kept_and_traced_muted(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    async with running(settings) as (_, client), ServeASGI(answering_app()) as served:
        apps = await answering_apps(client, "sitter", served.url, ("message", "proactive"))
        r = await client.post(
            "/v1/users/sitter/devices", json={"platform": "fcm", "token": "sitter-phone"}
        )
        assert r.status_code in (200, 201), r.text
        off = {"apps": {app_id: {"proactive": False} for app_id in apps.values()}}
        r = await client.put("/v1/users/sitter/preferences", json=off)
        assert r.status_code == 200, r.text
        await post_segments(client, "sitter", "sit", "I have been sitting all day.")
        for case, outcome in (("message", "message_sent"), ("proactive", "notified")):
            (trace,) = await wait_traces(client, apps[case], 1)
            # Accepted as always (Omi's apps see no change), its pushes muted: the trace says so.
            assert trace["outcome"] == outcome, trace
            note = trace["notification"]
            assert note["devices"] == 0
            assert note["hold"] == "muted" and "proactive" in note["hold_reason"], note
            status = await client.get("/v1/users/sitter/notifications?archived=true")
            (item,) = [n for n in status.json()["items"] if n["app_id"] == apps[case]]
            assert item["hold"] == "muted"
