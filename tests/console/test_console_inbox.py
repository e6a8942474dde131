"""The console's inbox state and notification settings in headless Chromium: read, unread,
archive and mark-all-read with the unread count (also when the change is made elsewhere), and a
user muting an app and setting quiet hours, with the effect on what is sent next."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.async_api import Page, expect

from tests.conftest import World, wait_for
from tests.console.test_console_browser import SLOW, open_console

READ = re.compile(r"\bread\b")
ARCHIVED = re.compile(r"\barchived\b")


async def send(client: httpx.AsyncClient, world: World, message: str) -> str:
    r = await client.post(
        f"/v2/integrations/{world.app_id}/notification",
        params={"uid": world.uid, "message": message},
        headers={"Authorization": f"Bearer {world.app_secret}"},
    )
    assert r.status_code == 200, r.text
    notification_id: str = r.json()["notification_id"]
    return notification_id


async def test_the_user_reads_archives_and_reads_all_with_the_count_live(
    page: Page, live_url: str, client: httpx.AsyncClient, mentor: World
) -> None:
    ids = [await send(client, mentor, f"Session {i} is planned") for i in range(3)]
    await open_console(page, live_url, f"token={mentor.user_token}")
    unread = page.locator("#unread-count")
    await expect(unread).to_have_text("3 unread")
    cards = [page.locator(f".notif[data-id='{i}']") for i in ids]

    async def all_seen() -> list[Any] | None:  # shown on screen: seen, and still unread
        items = (await client.get(f"/v1/users/{mentor.uid}/notifications")).json()["items"]
        return items if all(n["seen"] for n in items) else None

    seen = await wait_for(all_seen, timeout=10)
    assert [n["read"] for n in seen] == [False] * 3
    await expect(unread).to_have_text("3 unread")

    await cards[0].locator(".notif-body").click()
    await expect(cards[0]).to_have_class(READ)
    await expect(unread).to_have_text("2 unread")

    await cards[1].locator(".act-archive").click()
    await expect(cards[1]).to_have_count(0)
    await expect(unread).to_have_text("1 unread")
    inbox = (await client.get(f"/v1/users/{mentor.uid}/notifications")).json()["items"]
    assert [(n["id"], n["read"]) for n in inbox] == [(ids[2], False), (ids[0], True)]

    # A change made elsewhere (here: the API) reaches the page as a state event.
    r = await client.patch(f"/v1/users/{mentor.uid}/notifications/{ids[2]}", json={"read": True})
    assert r.status_code == 200, r.text
    await expect(cards[2]).to_have_class(READ)
    await expect(unread).to_have_text("0 unread")
    await expect(cards[2].locator(".act-read")).to_have_text("Mark unread")

    await cards[2].locator(".act-read").click()
    await expect(cards[2]).not_to_have_class(READ)
    await expect(unread).to_have_text("1 unread")
    await page.click("#read-all")
    await expect(unread).to_have_text("0 unread")
    await expect(cards[2]).to_have_class(READ)
    counted = await client.get(f"/v1/users/{mentor.uid}/notifications/unread-count")
    assert counted.json() == {"unread": 0}

    # Archived ones come back with the toggle, marked, and can be taken out of the archive.
    await page.check("#show-archived")
    await expect(cards[1]).to_have_class(ARCHIVED)
    await cards[1].locator(".act-archive").click()
    await expect(cards[1]).not_to_have_class(ARCHIVED)
    await page.uncheck("#show-archived")
    await expect(page.locator(".notif")).to_have_count(3)


async def test_the_user_mutes_an_app_and_sets_quiet_hours(
    page: Page, live_url: str, client: httpx.AsyncClient, mentor: World
) -> None:
    before = await send(client, mentor, "Stretch before you run")
    await open_console(page, live_url, f"token={mentor.user_token}")
    await page.click("#prefs summary")
    row = page.locator(f".pref-app[data-app='{mentor.app_id}']")
    await expect(row).to_contain_text("Mentor")  # named after its notifications
    await expect(row.locator(".pref-state")).to_have_text("")
    await expect(page.locator(f".notif[data-id='{before}'] .notif-hold")).to_have_count(0)

    await row.locator(".pref-muted").check()
    await page.fill("#pref-tz", "Europe/Paris")
    await page.check("#pref-quiet")
    await page.fill("#pref-quiet-start", "22:30")
    await page.fill("#pref-quiet-end", "06:45")
    await page.click("#pref-save")
    await expect(page.locator("#prefs-status")).to_have_text("Saved.")
    await expect(row.locator(".pref-state")).to_have_text("muted")
    await expect(page.locator("#prefs-summary")).to_have_text("quiet 22:30–06:45 · 1 muted")

    prefs = (await client.get(f"/v1/users/{mentor.uid}/preferences")).json()
    assert prefs["timezone"] == "Europe/Paris"
    assert prefs["quiet_hours"] == {"start": "22:30", "end": "06:45", "allow_high": False}
    mentor_prefs = prefs["apps"][mentor.app_id]
    assert mentor_prefs["muted"] is True and mentor_prefs["proactive"] is True

    # The effect: what the app sends now stays in the inbox, marked with why no push went out.
    sent = await send(client, mentor, "Time for your long run")
    inbox = (await client.get(f"/v1/users/{mentor.uid}/notifications")).json()["items"]
    held = next(n for n in inbox if n["id"] == sent)
    assert held["hold"] == "muted" and held["hold_reason"]
    card = page.locator(f".notif[data-id='{sent}']")
    await expect(card.locator(".notif-hold")).to_have_text(held["hold_reason"], timeout=SLOW)
    assert await card.get_attribute("data-hold") == "muted"

    # A bad time zone is refused by the API, named, and nothing changes.
    await page.fill("#pref-tz", "Mars/Olympus_Mons")
    await page.click("#pref-save")
    await expect(page.locator("#prefs-status")).to_contain_text("timezone")
    after = (await client.get(f"/v1/users/{mentor.uid}/preferences")).json()
    assert after == prefs

    # After a reload the form shows what was saved.
    await page.reload()
    await page.click("#prefs summary")
    await expect(page.locator("#pref-tz")).to_have_value("Europe/Paris")
    await expect(row.locator(".pref-muted")).to_be_checked()
    await expect(page.locator("#pref-quiet-start")).to_have_value("22:30")
