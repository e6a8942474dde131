"""``/docs`` and ``/redoc`` in headless Chromium with every request off this server refused: the
pages must render the operations from assets the server itself serves (no CDN)."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.async_api import Page, Route, expect

SLOW = 30_000  # ms


async def offline(page: Page, live_url: str) -> list[str]:
    """Abort every request that is not to the platform; return the refused URLs."""
    ours = urlsplit(live_url).netloc
    refused: list[str] = []

    async def route(r: Route) -> None:
        if urlsplit(r.request.url).netloc == ours:
            await r.continue_()
        else:
            refused.append(r.request.url)
            await r.abort()

    await page.route("**/*", route)
    return refused


async def test_swagger_ui_works_offline(page: Page, live_url: str) -> None:
    refused = await offline(page, live_url)
    await page.goto(f"{live_url}/docs")
    send = page.locator(".opblock-summary-path", has_text="/v2/integrations/{app_id}/notification")
    await expect(send.first).to_be_visible(timeout=SLOW)
    await expect(page.locator(".opblock").first).to_be_visible()
    assert await page.locator(".opblock").count() > 20  # every operation, not an error page
    assert refused == []


async def test_redoc_works_offline(page: Page, live_url: str) -> None:
    refused = await offline(page, live_url)
    await page.goto(f"{live_url}/redoc")
    await expect(page.get_by_text("Create a user").first).to_be_attached(timeout=SLOW)
    await expect(page.get_by_text("/v1/users/{uid}/notifications").first).to_be_attached()
    # ReDoc's "powered by" logo is the one thing it fetches from its CDN; offline it is not shown.
    assert set(refused) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}, refused
