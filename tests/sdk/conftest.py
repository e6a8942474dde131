"""Fixtures of the SDK tests: a real ``nudge serve`` per test module, and its admin client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN, Server, start_server


@pytest.fixture(scope="module")
def nudge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real platform for the module; every test makes its own app and user."""
    server = start_server(Path(tmp_path_factory.mktemp("sdk")))
    yield server
    server.stop()


@pytest.fixture
async def admin(nudge: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=nudge.url, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as c:
        yield c
