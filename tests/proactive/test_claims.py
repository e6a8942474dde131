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

from nudge.proactive.claims import Claims, RedisClaims, SqlClaims
from nudge.store.db import Database
from nudge.store.migrate import upgrade
from tests.proactive.helpers import ROOT

# One claimer process: waits for the common start time, then races its tasks for one key.
CLAIMER = """
import asyncio, json, sys, time
from nudge.proactive.claims import RedisClaims, SqlClaims
from nudge.store.db import Database

async def main(kind, url, key, start, tasks):
    db = None
    if kind == "sql":
        db = Database(url)
        claims = SqlClaims(db)
    else:
        claims = RedisClaims(url)
    await asyncio.sleep(max(start - time.time(), 0))
    results = await asyncio.gather(*(claims.claim(key, 30.0) for _ in range(tasks)))
    print(json.dumps([r.granted for r in results]))
    await claims.aclose()
    if db:
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
async def sql_claims(url: str) -> AsyncIterator[SqlClaims]:
    db = Database(url)
    try:
        yield SqlClaims(db)
    finally:
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
    await asyncio.sleep(0.3)  # expired: free again
    assert (await claims.claim(key, 30.0)).claim is not None


async def test_sql_claims_across_processes(database_url: str) -> None:
    await upgrade(database_url)
    async with sql_claims(database_url) as claims:
        await check_contract(claims, "proactive:app:contract")
    wins = await asyncio.to_thread(race, "sql", database_url, "proactive:app:u1")
    assert wins.count(True) == 1 and len(wins) == 20


@pytest.mark.redis
async def test_redis_claims_across_processes(redis_url: str) -> None:
    key = f"test:{time.time_ns()}"
    claims = RedisClaims(redis_url)
    try:
        await check_contract(claims, key + ":contract")
    finally:
        await claims.aclose()
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


async def check_then(claims: Claims, key: str) -> None:
    """Work given with a claim runs only when the claim is won; if it fails, no slot is kept."""
    ran: list[str] = []

    def reads(conn: Connection) -> int:
        ran.append(key)
        return int(conn.execute(text("SELECT 41 + 1")).scalar_one())

    won = await claims.claim(key, 30.0, reads)
    assert won.claim is not None and won.then == 42 and ran == [key]
    refused = await claims.claim(key, 30.0, reads)
    assert refused.claim is None and refused.then is None and ran == [key]

    def broken(conn: Connection) -> None:
        raise RuntimeError("a bug in the work")

    with pytest.raises(RuntimeError):
        await claims.claim(key + ":broken", 30.0, broken)
    assert (await claims.claim(key + ":broken", 30.0)).claim is not None


async def test_sql_claim_runs_work_in_its_transaction(database_url: str) -> None:
    await upgrade(database_url)
    async with sql_claims(database_url) as claims:
        await check_then(claims, f"proactive:app:then:{time.time_ns()}")


@pytest.mark.redis
async def test_redis_claim_runs_work_on_the_database(tmp_path: Path, redis_url: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/then.db"
    await upgrade(url)
    async with sql_claims(url) as sql:
        claims = RedisClaims(redis_url, sql.db)
        try:
            await check_then(claims, f"test:{time.time_ns()}:then")
        finally:
            await claims.aclose()
