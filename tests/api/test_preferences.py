"""``GET``/``PUT /v1/users/{uid}/preferences`` and what the preferences do to a notification,
on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from nudge.config import Settings
from tests.conftest import World, make_settings, wait_for

DEFAULT_APP = {
    "muted": False,
    "proactive": True,
    "direct": True,
    "channels": ["push", "inbox"],
    "digest_s": 0,
}


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url=database_url)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def url(world: World) -> str:
    return f"/v1/users/{world.uid}/preferences"


async def device(client: httpx.AsyncClient, uid: str) -> None:
    r = await client.post(f"/v1/users/{uid}/devices", json={"platform": "log", "token": "t1"})
    assert r.status_code == 201, r.text


async def send(client: httpx.AsyncClient, world: World, message: str) -> dict[str, Any]:
    r = await client.post(
        f"/v2/integrations/{world.app_id}/notification",
        params={"uid": world.uid, "message": message},
        headers=bearer(world.app_secret),
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def status(client: httpx.AsyncClient, world: World, notification_id: str) -> Any:
    r = await client.get(
        f"/v2/integrations/{world.app_id}/notifications/{notification_id}",
        headers=bearer(world.app_secret),
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_defaults_then_replace_the_whole_document(
    client: httpx.AsyncClient, world: World
) -> None:
    user = bearer(world.user_token)
    r = await client.get(url(world), headers=user)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "timezone": "UTC",
        "quiet_hours": None,
        "daily_cap": None,
        "apps": {world.app_id: DEFAULT_APP},
    }
    document = {
        "timezone": "Europe/Paris",
        "quiet_hours": {"start": "22:00", "end": "07:00", "allow_high": True},
        "daily_cap": 5,
        "apps": {world.app_id: {"muted": True, "channels": ["inbox"], "digest_s": 900}},
    }
    r = await client.put(url(world), json=document, headers=user)
    assert r.status_code == 200, r.text
    expected = {
        **document,
        "apps": {
            world.app_id: {**DEFAULT_APP, "muted": True, "channels": ["inbox"], "digest_s": 900}
        },
    }
    assert r.json() == expected
    assert (await client.get(url(world), headers=user)).json() == expected

    # PUT replaces: what is left out goes back to its default.
    r = await client.put(url(world), json={"daily_cap": 2}, headers=user)
    assert r.json() == {
        "timezone": "UTC",
        "quiet_hours": None,
        "daily_cap": 2,
        "apps": {world.app_id: DEFAULT_APP},
    }


async def test_only_the_user_or_the_admin(client: httpx.AsyncClient, world: World) -> None:
    r = await client.post("/v1/users", json={"uid": "other", "name": "Bo"})
    other = r.json()["user_token"]
    for method in ("GET", "PUT"):
        r = await client.request(method, url(world), json={}, headers=bearer(other))
        assert r.status_code == 403, r.text
        r = await client.request(method, url(world), json={}, headers=bearer(world.app_secret))
        assert r.status_code == 401, r.text
    r = await client.put(url(world), json={"daily_cap": 3})  # the admin token (the client's)
    assert r.status_code == 200 and r.json()["daily_cap"] == 3
    r = await client.get("/v1/users/nobody/preferences")
    assert r.status_code == 404 and "nobody" in r.json()["detail"]


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": 5}, "timezone"),
        ({"timezone": "localtime"}, "timezone"),
        ({"quiet_hours": {"start": "22:00", "end": "22:00"}}, "quiet_hours"),
        ({"quiet_hours": {"start": "7:00", "end": "22:00"}}, "quiet_hours.start"),
        ({"quiet_hours": {"start": "22:00", "end": "24:00"}}, "quiet_hours.end"),
        ({"quiet_hours": {"start": "22:00"}}, "quiet_hours.end"),
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "allow_high": "yes"}}, "allow_high"),
        ({"daily_cap": 0}, "daily_cap"),
        ({"daily_cap": "3"}, "daily_cap"),
        ({"apps": {"APP": {"channels": []}}}, "apps.APP.channels"),
        ({"apps": {"APP": {"channels": ["sms"]}}}, "apps.APP.channels.0"),
        ({"apps": {"APP": {"channels": ["push", "push"]}}}, "apps.APP.channels"),
        ({"apps": {"APP": {"digest_s": 86_401}}}, "apps.APP.digest_s"),
        ({"apps": {"APP": {"digest_s": -1}}}, "apps.APP.digest_s"),
        ({"apps": {"APP": {"muted": 1}}}, "apps.APP.muted"),
        ({"apps": {"APP": {"mute": True}}}, "apps.APP.mute"),
        ({"apps": {"not_installed": {}}}, "apps.not_installed"),
        ({"quiet": True}, "quiet"),
    ],
)
async def test_bad_fields_are_422_naming_the_field_and_change_nothing(
    client: httpx.AsyncClient, world: World, document: dict[str, Any], field: str
) -> None:
    before = (await client.get(url(world))).json()
    # "APP" stands for the installed app; a valid key beside the bad one is not written either.
    body = json.loads(json.dumps({"daily_cap": 9, **document}).replace("APP", world.app_id))
    r = await client.put(url(world), json=body)
    assert r.status_code == 422, r.text
    assert field.replace("APP", world.app_id) in r.json()["detail"], r.json()
    assert (await client.get(url(world))).json() == before


async def test_muted_app_is_accepted_kept_in_the_inbox_and_never_pushed(
    client: httpx.AsyncClient, world: World
) -> None:
    await device(client, world.uid)
    r = await client.put(url(world), json={"apps": {world.app_id: {"muted": True}}})
    assert r.status_code == 200, r.text
    sent = await send(client, world, "you will not hear this")
    assert (sent["status"], sent["devices"]) == ("ok", 0)
    note = await status(client, world, sent["notification_id"])
    assert (note["hold"], note["hold_reason"]) == ("muted", "app muted by the user")
    assert [d["provider"] for d in note["deliveries"]] == ["inbox"]
    inbox = (await client.get(f"/v1/users/{world.uid}/notifications")).json()["items"]
    assert [(n["body"], n["hold"]) for n in inbox] == [("you will not hear this", "muted")]


async def test_direct_off_mutes_direct_only_and_inbox_only_channel(
    client: httpx.AsyncClient, world: World
) -> None:
    await device(client, world.uid)
    prefs = {"apps": {world.app_id: {"direct": False, "proactive": True}}}
    assert (await client.put(url(world), json=prefs)).status_code == 200
    sent = await send(client, world, "direct one")
    note = await status(client, world, sent["notification_id"])
    assert note["hold"] == "muted" and "direct" in note["hold_reason"]

    prefs = {"apps": {world.app_id: {"channels": ["push"]}}}
    assert (await client.put(url(world), json=prefs)).status_code == 200
    sent = await send(client, world, "push only")
    assert sent["devices"] == 1
    note = await status(client, world, sent["notification_id"])
    assert note["hold"] == "" and [d["provider"] for d in note["deliveries"]] == ["log"]


async def test_quiet_hours_hold_device_pushes_until_the_window_ends(
    client: httpx.AsyncClient, world: World
) -> None:
    await device(client, world.uid)
    # A window that contains now and ends about a day later (start == end is refused).
    now = datetime.now(UTC)
    end = (now - timedelta(minutes=2)).strftime("%H:%M")  # ends ~a day from now
    start = (now - timedelta(minutes=1)).strftime("%H:%M")
    prefs = {"timezone": "UTC", "quiet_hours": {"start": start, "end": end}}
    assert (await client.put(url(world), json=prefs)).status_code == 200
    sent = await send(client, world, "at night")
    assert sent["devices"] == 1  # the push is held, not dropped
    note = await status(client, world, sent["notification_id"])
    assert note["hold"] == "quiet"
    assert note["hold_reason"] == f"quiet hours until {end} UTC"
    (push,) = [d for d in note["deliveries"] if d["provider"] == "log"]
    assert push["state"] == "held"
    assert push["next_attempt_at"] > time.time() + 23 * 3600


async def test_changing_quiet_hours_re_times_pushes_still_held(
    client: httpx.AsyncClient, world: World
) -> None:
    await device(client, world.uid)
    now = datetime.now(UTC)
    start = (now - timedelta(minutes=1)).strftime("%H:%M")
    ends = [(now + timedelta(hours=h)).strftime("%H:%M") for h in (5, 2)]
    held = {"timezone": "UTC", "quiet_hours": {"start": start, "end": ends[0]}}
    assert (await client.put(url(world), json=held)).status_code == 200
    nid = (await send(client, world, "at night"))["notification_id"]

    async def push() -> dict[str, Any]:
        note = await status(client, world, nid)
        (delivery,) = [d for d in note["deliveries"] if d["provider"] == "log"]
        return note | {"push": delivery}

    first = await push()
    assert first["push"]["state"] == "held"
    # Quiet hours that end three hours earlier: the push waits for the new end.
    held["quiet_hours"]["end"] = ends[1]
    assert (await client.put(url(world), json=held)).status_code == 200
    moved = await push()
    assert moved["push"]["state"] == "held"
    assert moved["push"]["next_attempt_at"] == pytest.approx(
        first["push"]["next_attempt_at"] - 3 * 3600, abs=120
    )
    assert moved["hold_reason"] == f"quiet hours until {ends[1]} UTC"
    # Quiet hours off: it goes now (the platform's worker sends it), saying why it went early.
    assert (await client.put(url(world), json={"timezone": "UTC"})).status_code == 200

    async def delivered() -> dict[str, Any] | None:
        note = await push()
        return note if note["push"]["state"] == "delivered" else None

    gone = await wait_for(delivered, timeout=10)
    assert gone["hold"] == "quiet" and gone["hold_reason"].startswith("released early")
    assert gone["state"] == "delivered"


async def test_daily_cap_lets_exactly_the_cap_through_concurrent_sends(
    client: httpx.AsyncClient, world: World
) -> None:
    await device(client, world.uid)
    prefs = {"timezone": "America/New_York", "daily_cap": 3}
    assert (await client.put(url(world), json=prefs)).status_code == 200
    sent = await asyncio.gather(*(send(client, world, f"message {n}") for n in range(8)))
    assert sorted(s["devices"] for s in sent) == [0] * 5 + [1] * 3
    for s in sent:
        note = await status(client, world, s["notification_id"])
        pushes = [d for d in note["deliveries"] if d["provider"] != "inbox"]
        if s["devices"]:
            assert note["hold"] == "" and len(pushes) == 1
        else:
            assert note["hold"] == "muted" and pushes == []
            assert note["hold_reason"] == (
                "daily cap of 3 pushes reached (resets at midnight America/New_York)"
            )
    # A muted app's notifications use none of the cap; raising the cap lets more through.
    assert (await client.put(url(world), json={"daily_cap": 4})).status_code == 200
    assert (await send(client, world, "the fourth"))["devices"] == 1
    assert (await send(client, world, "the fifth"))["devices"] == 0


async def test_muting_later_withdraws_pushes_still_waiting(
    client: httpx.AsyncClient, world: World
) -> None:
    await device(client, world.uid)
    now = datetime.now(UTC)
    quiet = {
        "start": (now - timedelta(minutes=1)).strftime("%H:%M"),
        "end": (now - timedelta(minutes=2)).strftime("%H:%M"),
    }
    assert (await client.put(url(world), json={"quiet_hours": quiet})).status_code == 200
    held = await send(client, world, "held for the night")
    assert (await status(client, world, held["notification_id"]))["hold"] == "quiet"
    # Proactive off: a direct notification's held push stays.
    prefs: dict[str, Any] = {"quiet_hours": quiet, "apps": {world.app_id: {"proactive": False}}}
    assert (await client.put(url(world), json=prefs)).status_code == 200
    note = await status(client, world, held["notification_id"])
    assert note["hold"] == "quiet" and len(note["deliveries"]) == 2
    # Muted: the held push is withdrawn; the inbox delivery stays.
    prefs["apps"] = {world.app_id: {"muted": True}}
    assert (await client.put(url(world), json=prefs)).status_code == 200
    note = await status(client, world, held["notification_id"])
    assert (note["hold"], note["hold_reason"]) == ("muted", "app muted by the user")
    assert [d["provider"] for d in note["deliveries"]] == ["inbox"]
    assert note["state"] == "muted"
