"""The console's user view of what apps imported: its call, and the panel in headless Chromium."""

from __future__ import annotations

import httpx
from playwright.async_api import Page, expect

from tests.api.integration_helpers import IMPORTER, import_for
from tests.conftest import ADMIN, World, make_world


async def imported(client: httpx.AsyncClient) -> World:
    """Ana, with a fact of her own and a memory and a conversation the Journal app imported."""
    world = await make_world(client, IMPORTER, scopes=[])
    await import_for(
        client,
        world,
        [{"content": "Ana keeps a journal <b>daily</b>"}],
        {"text": "Journal entry about the garden", "started_at": "2024-05-01T07:00:00Z"},
    )
    return world


async def test_knowledge_lists_facts_and_conversations_with_their_app(
    client: httpx.AsyncClient,
) -> None:
    world = await imported(client)
    r = await client.get(f"/console/api/users/{world.uid}/knowledge")
    assert r.status_code == 200, r.text
    known = r.json()
    assert [(f["text"], f["app_id"]) for f in known["facts"]] == [
        ("Ana keeps a journal <b>daily</b>", world.app_id),
        ("Wants to run a marathon", None),
    ]
    (conversation,) = known["conversations"]
    assert conversation["title"] == "Journal entry about the garden"
    assert (conversation["source"], conversation["app_id"]) == (
        "external_integration",
        world.app_id,
    )
    # The user's own token works; another user's does not; an unknown user is a 404.
    own = {"Authorization": f"Bearer {world.user_token}"}
    assert (
        await client.get(f"/console/api/users/{world.uid}/knowledge", headers=own)
    ).status_code == 200
    other = await make_world(client, IMPORTER, scopes=[], uid="bo")
    theirs = {"Authorization": f"Bearer {other.user_token}"}
    assert (
        await client.get(f"/console/api/users/{world.uid}/knowledge", headers=theirs)
    ).status_code == 403
    assert (await client.get("/console/api/users/nobody/knowledge")).status_code == 404


async def test_the_user_view_shows_what_apps_imported(
    page: Page, live_url: str, client: httpx.AsyncClient
) -> None:
    world = await imported(client)
    await page.goto(f"{live_url}/console?token={ADMIN}&uid={world.uid}")
    panel = page.locator("#knowledge")
    await expect(page.locator("#knowledge-count")).to_have_text("2 facts · 1 conversations")
    await panel.locator("summary").click()
    fact = panel.locator("#known-facts li").first
    await expect(fact).to_contain_text("Ana keeps a journal <b>daily</b>")  # text, not markup
    await expect(fact.locator(".from")).to_have_text("from Journal")
    conversation = panel.locator("#known-conversations li")
    await expect(conversation).to_contain_text("Journal entry about the garden")
    assert await conversation.get_attribute("data-source") == "external_integration"
    assert await panel.locator("b").count() == 0
