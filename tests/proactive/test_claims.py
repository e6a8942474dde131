"""The 30 s proactive claim: exactly one winner among concurrent claimers in several processes,
on the SQL backend (SQLite and PostgreSQL) and the Redis backend."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from nudge.proactive.claims import Claims, take
from nudge.store.db import Database
from nudge.store.migrate import upgrade
from tests.proactive.helpers import ROOT

# One claimer process: waits for the common start time, then races its tasks for one key.
CLAIMER = """
import asyncio, json, sys, time
from nudge.proactive.claims import Claims
from nudge.store.db import Database

async def main(kind, url, key, start, tasks):
    db = Database(url if kind == "sql" else "sqlite+aiosqlite://")
    claims = Claims(db, url if kind == "redis" else None)
    await asyncio.sleep(max(start - time.time(), 0))
    results = await asyncio.gather(*(claims.claim(key, 30.0) for _ in range(tasks)))
    print(json.dumps([r.granted for r in results]))
    await claims.aclose()
    await db.close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])))
"""


def race(kind: str, url: str, key: str, processes: int = 4, tasks: int = 5) -> list[bool]:
    start = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, kind, url, key, str(start), str(tasks)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    wins: list[bool] = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        wins += json.loads(out)
    return wins


@asynccontextmanager
async def claims_in(database_url: str, redis_url: str | None = None) -> AsyncIterator[Claims]:
    db = Database(database_url)
    claims = Claims(db, redis_url)
    try:
        yield claims
    finally:
        await claims.aclose()
        await db.close()


async def check_contract(claims: Claims, key: str) -> None:
    first = await claims.claim(key, 30.0)
    assert first.claim is not None
    taken = await claims.claim(key, 30.0)
    assert taken.claim is None and 29.0 < taken.retry_after_s <= 30.0
    await claims.release(first.claim)
    again = await claims.claim(key, 0.2)
    assert again.claim is not None
    await claims.release(first.claim)  # a stale token gives nothing back
    assert (await claims.claim(key, 0.2)).claim is None
    assert claims.remembered(key) is not None  # and the refusal is remembered
    await asyncio.sleep(0.3)  # expired: free again
    assert (await claims.claim(key, 30.0)).claim is not None


async def test_sql_claims_across_processes(database_url: str) -> None:
    await upgrade(database_url)
    async with claims_in(database_url) as claims:
        await check_contract(claims, "proactive:app:contract")
    wins = await asyncio.to_thread(race, "sql", database_url, "proactive:app:u1")
    assert wins.count(True) == 1 and len(wins) == 20


@pytest.mark.redis
async def test_redis_claims_across_processes(redis_url: str) -> None:
    key = f"test:{time.time_ns()}"
    async with claims_in("sqlite+aiosqlite://", redis_url) as claims:
        assert claims.backend == "redis"
        await check_contract(claims, key + ":contract")
    wins = await asyncio.to_thread(race, "redis", redis_url, key)
    assert wins.count(True) == 1 and len(wins) == 20


async def test_platform_uses_redis_claims_when_configured(tmp_path: Path, redis_url: str) -> None:
    from nudge.platform import Platform
    from tests.conftest import make_settings

    platform = await Platform.start(make_settings(tmp_path, redis_url=redis_url))
    try:
        assert platform.claims is not None and platform.claims.backend == "redis"
    finally:
        await platform.close()


async def test_sql_claim_commits_or_rolls_back_with_its_unit_of_work(database_url: str) -> None:
    """The claim in the database is a work function: composed with other work into one
    transaction, it is kept only if that work succeeds."""
    await upgrade(database_url)
    key = f"proactive:app:unit:{time.time_ns()}"
    async with claims_in(database_url) as claims:

        def broken(conn: Connection) -> None:
            assert take(conn, key, 30.0).granted
            raise RuntimeError("a bug in the work")

        with pytest.raises(RuntimeError):
            await claims.db.write_now(broken)

        def unit(conn: Connection) -> tuple[bool, int]:
            won = take(conn, key, 30.0).granted
            return won, int(conn.execute(text("SELECT 41 + 1")).scalar_one())

        assert await claims.db.write_now(unit) == (True, 42)
        assert await claims.db.write_now(unit) == (False, 42)
