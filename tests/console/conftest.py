"""Headless Chromium (Debian's, driven by Playwright) against the platform served over real HTTP,
with the mentor example as a real webhook server."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import httpx
import pytest
from examples.common import AppSettings
from examples.mentor.app import create_app as create_mentor
from playwright.async_api import Browser, Page, async_playwright

from nudge.cli.demo import SCOPES as MENTOR_SCOPES
from nudge.cli.demo import mentor_manifest
from tests.conftest import ServeASGI, World, free_port, make_world, unavailable

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not shutil.which(chromium):
        unavailable("Chromium (/usr/bin/chromium)", "bash scripts/system-deps.sh")
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A page that fails the test on any JavaScript error."""
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    await context.close()
    assert not errors, f"JavaScript errors in the console: {errors}"


@pytest.fixture
async def mentor(client: httpx.AsyncClient) -> AsyncIterator[World]:
    """The mentor example registered, installed by user123 (Ana), and serving its webhook."""
    port = free_port()
    world = await make_world(client, mentor_manifest(port), scopes=MENTOR_SCOPES)
    async with ServeASGI(create_mentor(AppSettings(world.webhook_secret)), port=port):
        yield world
