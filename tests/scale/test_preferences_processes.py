"""Preferences across processes: set through one ``nudge serve`` process (with the CLI over
HTTP, and with the SDK), they hold for notifications sent through another on the same database;
the daily cap stays exact when both processes accept at once. On SQLite (one file) and
PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from nudge.sdk.client import AsyncNudgeClient
from nudge.store.migrate import upgrade
from tests.conftest import ADMIN, World, make_world, start_server

ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
async def two_urls(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[str, str, str]]:
    """Two ``nudge serve`` processes on ``database_url``: (their URLs, the database URL)."""
    await upgrade(database_url)
    env = {"NUDGE_DATABASE_URL": database_url}
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    one, two = await asyncio.gather(
        asyncio.to_thread(start_server, tmp_path / "one", env),
        asyncio.to_thread(start_server, tmp_path / "two", env),
    )
    try:
        yield one.url, two.url, database_url
    finally:
        one.stop()
        two.stop()


def cli(*args: str, database_url: str, stdin: str = "") -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "nudge.cli", *args],
        env={**os.environ, "NUDGE_DATABASE_URL": database_url, "NUDGE_ADMIN_TOKEN": ADMIN},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stdout + out.stderr
    return json.loads(out.stdout)


async def send(url: str, world: World, message: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        r = await c.post(
            f"/v2/integrations/{world.app_id}/notification",
            params={"uid": world.uid, "message": message},
            headers={"Authorization": f"Bearer {world.app_secret}"},
        )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def status(url: str, world: World, notification_id: str) -> Any:
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        r = await c.get(
            f"/v2/integrations/{world.app_id}/notifications/{notification_id}",
            headers={"Authorization": f"Bearer {world.app_secret}"},
        )
    assert r.status_code == 200, r.text
    return r.json()


async def test_preferences_set_on_one_process_hold_on_another(
    two_urls: tuple[str, str, str], tmp_path: Path
) -> None:
    one, two, database_url = two_urls
    async with httpx.AsyncClient(base_url=one, headers=ADMIN_HEADERS, timeout=30) as c:
        world = await make_world(c)
        r = await c.post(f"/v1/users/{world.uid}/devices", json={"platform": "log", "token": "t"})
        assert r.status_code == 201, r.text

    # Muted with the CLI over HTTP on the first process; sent through the second.
    document = tmp_path / "muted.json"
    document.write_text(json.dumps({"apps": {world.app_id: {"muted": True}}}))
    remote = ("--url", one, "--token", ADMIN)
    set_ = cli("preferences", "set", world.uid, str(document), *remote, database_url=database_url)
    assert set_["apps"][world.app_id]["muted"] is True
    sent = await send(two, world, "while muted")
    assert sent["devices"] == 0
    note = await status(two, world, sent["notification_id"])
    assert (note["hold"], [d["provider"] for d in note["deliveries"]]) == ("muted", ["inbox"])

    # Quiet hours (a window holding now) with the SDK on the second; sent through the first.
    now = datetime.now(UTC)
    quiet = {
        "start": (now - timedelta(minutes=1)).strftime("%H:%M"),
        "end": (now - timedelta(minutes=2)).strftime("%H:%M"),
    }
    async with AsyncNudgeClient(two, world.app_id, world.app_secret) as nudge:
        stored = await nudge.set_preferences(
            world.uid, {"timezone": "UTC", "quiet_hours": quiet}, user_token=world.user_token
        )
        assert stored.apps[world.app_id].muted is False  # the whole document was replaced
        got = await nudge.get_preferences(world.uid, user_token=world.user_token)
        assert got == stored and got.quiet_hours is not None and got.quiet_hours.end == quiet["end"]
    sent = await send(one, world, "at night")
    note = await status(one, world, sent["notification_id"])
    assert (sent["devices"], note["hold"]) == (1, "quiet")
    assert note["hold_reason"] == f"quiet hours until {quiet['end']} UTC"

    # The CLI on the database itself (no server) reads what the processes wrote.
    local = cli("preferences", "get", world.uid, database_url=database_url)
    assert local["quiet_hours"]["start"] == quiet["start"]
    refused = subprocess.run(
        [sys.executable, "-m", "nudge.cli", "preferences", "set", world.uid, "-"],
        env={**os.environ, "NUDGE_DATABASE_URL": database_url},
        input=json.dumps({"daily_cap": 0}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "daily_cap" in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_the_daily_cap_is_exact_with_two_processes_accepting_at_once(
    two_urls: tuple[str, str, str],
) -> None:
    one, two, _ = two_urls
    async with httpx.AsyncClient(base_url=one, headers=ADMIN_HEADERS, timeout=30) as c:
        world = await make_world(c)
        r = await c.post(f"/v1/users/{world.uid}/devices", json={"platform": "log", "token": "t"})
        assert r.status_code == 201, r.text
        r = await c.put(f"/v1/users/{world.uid}/preferences", json={"daily_cap": 3})
        assert r.status_code == 200, r.text
    # 10: the default hourly limit of direct notifications per user and app.
    sent = await asyncio.gather(
        *(send((one, two)[n % 2], world, f"message {n}") for n in range(10))
    )
    assert sorted(s["devices"] for s in sent) == [0] * 7 + [1] * 3
