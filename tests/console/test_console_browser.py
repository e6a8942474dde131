"""The console in headless Chromium: the live feed, the simulator feeding the real pipeline (with
the mentor example as the app), the trace view, and signing in."""

from __future__ import annotations

import json
from typing import Any

import httpx
from playwright.async_api import Page, expect

from tests.conftest import ADMIN, World, wait_for

SLOW = 30_000  # ms: the whole pipeline on a busy machine


async def open_console(page: Page, live_url: str, query: str) -> None:
    await page.goto(f"{live_url}/console?{query}")
    await expect(page.locator("#live")).to_have_attribute("data-live", "true", timeout=SLOW)


async def say(page: Page, speaker: int, text: str) -> None:
    await page.click(f".speaker[data-speaker='{speaker}']")
    await page.fill("#say", text)
    await page.press("#say", "Enter")
    sent = page.locator(".bubble", has_text=text).locator(".tick")
    await expect(sent).to_have_text("sent", timeout=SLOW)


async def test_a_notification_sent_through_the_api_appears_without_a_reload(
    page: Page, live_url: str, client: httpx.AsyncClient, mentor: World
) -> None:
    await open_console(page, live_url, f"token={ADMIN}&uid={mentor.uid}")
    assert "token=" not in page.url  # kept out of the address bar and the history
    await expect(page.locator("#feed-empty")).to_be_visible()
    await page.evaluate("window.sameDocument = true")

    message = "Your run starts in 10 minutes <img src=x onerror=document.title='owned'>"
    r = await client.post(
        f"/v2/integrations/{mentor.app_id}/notification",
        params={"uid": mentor.uid, "message": message},
        headers={"Authorization": f"Bearer {mentor.app_secret}"},
    )
    assert r.status_code == 200, r.text

    card = page.locator(".notif", has_text="Your run starts in 10 minutes")
    await expect(card).to_have_count(1, timeout=SLOW)
    assert await card.get_attribute("data-id") == r.json()["notification_id"]
    # User data is text, never markup.
    assert await card.locator(".notif-body").text_content() == message
    assert await page.locator("#feed img").count() == 0
    assert await page.title() == "Nudge console"
    assert await page.evaluate("window.sameDocument") is True  # no reload happened

    # Clicking marks it read, through the API.
    await card.click()
    await expect(card).to_have_class("notif fresh read")
    inbox = (await client.get(f"/v1/users/{mentor.uid}/notifications")).json()["items"]
    assert inbox[0]["read"] is True


async def test_a_line_typed_in_the_simulator_ends_as_a_mentor_notification(
    page: Page, live_url: str, client: httpx.AsyncClient, mentor: World
) -> None:
    await open_console(page, live_url, f"token={ADMIN}&uid={mentor.uid}")
    await say(page, 0, "I signed up for the city marathon in April.")
    await say(page, 1, "Nice! How is the training going?")
    await say(page, 0, "Slowly. What do you think I should change?")

    card = page.locator(".notif", has_text="Mentor says")
    await expect(card).to_have_count(1, timeout=SLOW)
    body = await card.locator(".notif-body").text_content()
    # The fake LLM echoes what it was given: the mentor's prompt, filled with this user's data
    # and the lines typed above.
    assert body is not None and body.startswith("Noted: You are a helpful mentor for Ana.")
    assert "Wants to run a marathon" in body
    # The echo is cut at the notification's 300 characters; the whole filled prompt is in the
    # app's trace, lines typed in the simulator included.
    traces = (await client.get(f"/v1/apps/{mentor.app_id}/traces")).json()["items"]
    notified = [t for t in traces if t["outcome"] == "notified"]
    assert "What do you think I should change?" in json.dumps(notified[0])

    inbox = (await client.get(f"/v1/users/{mentor.uid}/notifications")).json()["items"]
    assert [(n["kind"], n["app_id"], n["body"]) for n in inbox] == [
        ("proactive", mentor.app_id, body)
    ]
    session_id = await page.locator("#session-id").text_content()
    session = (await client.get(f"/v1/users/{mentor.uid}/sessions/{session_id}")).json()
    said = [(s["speaker"], s["is_user"]) for s in session["transcript_segments"]]
    assert said == [("SPEAKER_00", True), ("SPEAKER_01", False), ("SPEAKER_00", True)]


async def test_the_trace_view_shows_the_filled_prompt(
    page: Page, live_url: str, client: httpx.AsyncClient, mentor: World
) -> None:
    segments = [
        {"text": "I keep skipping my long runs.", "speaker": "SPEAKER_00", "is_user": True},
        {"text": "Any advice?", "speaker": "SPEAKER_00", "is_user": True},
    ]
    r = await client.post(
        f"/v1/users/{mentor.uid}/sessions/s-trace/segments", json={"segments": segments}
    )
    assert r.status_code == 202, r.text

    async def notified() -> dict[str, Any] | None:
        items = (await client.get(f"/v1/apps/{mentor.app_id}/traces")).json()["items"]
        done = [t for t in items if t["outcome"] == "notified" and t["deliveries"]]
        ready = done and all(d["state"] == "delivered" for d in done[0]["deliveries"])
        return done[0] if ready else None

    trace = await wait_for(notified, timeout=30)

    await open_console(page, live_url, f"token={ADMIN}&uid={mentor.uid}&app={mentor.app_id}")
    await page.click(".trace[data-outcome='notified'] .trace-head")
    opened = page.locator(".trace.open")
    filled = opened.locator("pre.filled-prompt")
    await expect(filled).to_have_count(1)
    assert await filled.text_content() == trace["prompt"]["filled"]
    assert trace["prompt"]["filled"].startswith("You are a helpful mentor for Ana.")
    assert "(Wants to run a marathon)" in trace["prompt"]["filled"]
    assert "Any advice?" in trace["prompt"]["filled"]
    # The other steps of the call are there too.
    assert await opened.locator("pre.template").text_content() == trace["prompt"]["template"]
    assert await opened.locator("pre.llm-output").text_content() == trace["llm"]["output"]
    assert await opened.locator("pre.answer-body").text_content() == trace["response"]["body"]
    scopes = await opened.locator("table.scopes").inner_text()
    assert all(f"{s}\tfilled" in scopes for s in ("user_name", "user_facts", "user_context"))
    assert "inbox\tdelivered" in await opened.locator("table.deliveries").inner_text()
    await expect(opened.locator(".kv", has_text="decision")).to_contain_text("claimed")


async def test_loading_a_transcript_plays_it_line_by_line(
    page: Page, live_url: str, client: httpx.AsyncClient, mentor: World
) -> None:
    await open_console(page, live_url, f"token={ADMIN}&uid={mentor.uid}")
    await page.click("#load-toggle")
    await page.fill(
        "#transcript-text",
        "# a comment\nAna: Morning!\nCoach: Ready for intervals?\n\nAna: Not really.\n",
    )
    await page.fill("#play-interval", "0")
    await page.click("#play")
    await expect(page.locator(".bubble .tick", has_text="sent")).to_have_count(3, timeout=SLOW)
    assert await page.locator(".bubble.me .who").all_text_contents() == ["Ana", "Ana"]
    session_id = await page.locator("#session-id").text_content()
    session = (await client.get(f"/v1/users/{mentor.uid}/sessions/{session_id}")).json()
    assert [(s["text"], s["is_user"]) for s in session["transcript_segments"]] == [
        ("Morning!", True),
        ("Ready for intervals?", False),
        ("Not really.", True),
    ]
    # A malformed transcript is refused with the line that is wrong, and nothing is sent.
    await page.fill("#transcript-text", "Ana: fine\nthis line has no speaker\n")
    await page.click("#play")
    await expect(page.locator("#sim-status")).to_contain_text("line 2")
    assert await page.locator(".bubble").count() == 3

    await page.click("#finish")
    await expect(page.locator("#sim-status")).to_contain_text(f"Finished {session_id}")
    session = (await client.get(f"/v1/users/{mentor.uid}/sessions/{session_id}")).json()
    assert session["status"] in ("processing", "completed")  # Omi's names (docs/proactive.md)


async def test_signing_in_with_the_form_and_with_a_user_token(
    page: Page, live_url: str, mentor: World
) -> None:
    await page.goto(f"{live_url}/console")
    await expect(page.locator("#login")).to_be_visible()
    await page.fill("#token-input", "not-a-token")
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#login-error")).to_have_text("That token is not valid here.")

    await page.fill("#token-input", mentor.user_token)
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#live")).to_have_attribute("data-live", "true", timeout=SLOW)
    assert await page.locator("#user-select").input_value() == mentor.uid
    await expect(page.locator("#role-chip")).to_have_text(f"user {mentor.uid}")
    # Traces are for app developers: a user token does not see them.
    await expect(page.locator("#dev-note")).to_contain_text("admin token or the app's secret")

    await page.click("#logout")
    await expect(page.locator("#login")).to_be_visible()
    await page.reload()
    await expect(page.locator("#login")).to_be_visible()  # the token is forgotten

    # An app secret sees its own app's traces, and neither the inbox nor the simulator.
    await page.fill("#token-input", mentor.app_secret)
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#role-chip")).to_have_text(f"app {mentor.app_id}")
    assert await page.locator("#app-select").input_value() == mentor.app_id
    await expect(page.locator("#dev-note")).to_have_text(
        "No webhook calls yet. Say something in the conversation."
    )
    await expect(page.locator("#feed-empty")).to_contain_text("Signed in with an app secret")
    assert await page.locator("#say").is_disabled()
