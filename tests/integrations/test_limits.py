"""The integration API's fixed windows, in the database (SQLite, PostgreSQL) and in Redis: the
count, the window's end, a new window after it, and one count shared by concurrent requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from nudge.errors import RateLimited
from nudge.integrations.limits import Counters, Policy, take
from nudge.store.db import Database
from nudge.store.migrate import upgrade


@pytest.fixture(params=["sql", "redis"])
async def counters(
    request: pytest.FixtureRequest, database_url: str, redis_url: str
) -> AsyncIterator[Counters]:
    import secrets

    sql = request.param == "sql"
    if sql:
        await upgrade(database_url)
    db = Database(database_url)
    prefix = f"nudge:test:{secrets.token_hex(4)}:"
    counters = Counters(db, None if sql else redis_url, prefix=prefix)
    yield counters
    await counters.aclose()
    await db.close()


async def test_a_window_counts_then_starts_again(counters: Counters) -> None:
    first = await counters.hit("k", 0.6)
    assert first.count == 1 and 0.3 < first.reset_s <= 0.6
    assert (await counters.hit("k", 0.6)).count == 2
    assert (await counters.hit("other", 0.6)).count == 1
    await asyncio.sleep(0.7)
    again = await counters.hit("k", 0.6)
    assert again.count == 1 and again.reset_s > 0.3


async def test_concurrent_hits_each_count_once(counters: Counters) -> None:
    hits = await asyncio.gather(*(counters.hit("busy", 60) for _ in range(20)))
    assert sorted(h.count for h in hits) == list(range(1, 21))


async def test_take_refuses_past_the_limit_with_the_headers(counters: Counters) -> None:
    policy = Policy("integration:test", 2)
    assert (await take(counters, policy, "app", "u")).remaining == 1
    assert (await take(counters, policy, "app", "u")).remaining == 0
    with pytest.raises(RateLimited) as refused:
        await take(counters, policy, "app", "u")
    headers = refused.value.headers
    assert headers["X-RateLimit-Remaining"] == "0" and headers["X-RateLimit-Limit"] == "2"
    assert 3590 <= int(headers["Retry-After"]) <= 3600
    assert (await take(counters, policy, "app", "v")).remaining == 1  # per user
