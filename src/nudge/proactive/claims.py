"""The proactive rate limit as an atomic claim: "this (user, app) slot is taken for 30 s".

A claim is taken before the LLM runs and given back when nothing is sent, so across every process
at most one proactive notification per user per app goes out per interval. Two backends, the same
contract: SQL (the ``rate_claims`` table, one conditional upsert) by default, Redis
(``SET NX PX`` and a compare-and-delete script) when ``NUDGE_REDIS_URL`` is set.

A claim can carry work for when it is granted (``then``: the pipeline's reads): on SQL it runs in
the claim's own transaction (one unit of work through ``Database.write``), so a won claim costs one
trip to the database in all.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from sqlalchemy import Connection

from nudge.store import claims as sql
from nudge.store.db import Database


@dataclass(frozen=True)
class Claim:
    key: str
    token: str


Then = Callable[[Connection], Any]


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim | None  # None: the slot is taken
    retry_after_s: float = 0.0  # when taken: how long until it frees up
    then: Any = None  # when granted: what ``then`` returned

    @property
    def granted(self) -> bool:
        return self.claim is not None


class Claims(Protocol):
    @property
    def backend(self) -> str:
        """``sql`` or ``redis``: where the claims live."""
        ...

    async def claim(self, key: str, ttl_s: float, then: Then | None = None) -> ClaimResult:
        """Take the slot; when granted, run ``then`` on the database (in the same transaction
        where the claim is a row) and return its result with the claim."""
        ...

    async def release(self, claim: Claim) -> None:
        """Give a slot back (only if it is still ours)."""
        ...

    async def aclose(self) -> None: ...


class SqlClaims:
    """One ``INSERT … ON CONFLICT DO UPDATE`` that takes the row over only when it expired and
    returns its holder: atomic on SQLite (writes are serialised) and on PostgreSQL (the
    conflicting row is locked, then re-read)."""

    backend: ClassVar[str] = "sql"

    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, key: str, ttl_s: float, then: Then | None = None) -> ClaimResult:
        token = secrets.token_hex(8)

        def work(conn: Connection) -> ClaimResult:
            now = time.time()
            holder, until = sql.take(conn, key, token, now, now + ttl_s)
            if holder == token:
                return ClaimResult(Claim(key, token), then=then(conn) if then else None)
            return ClaimResult(None, max(until - now, 0.0))

        return await self.db.write_now(work)

    async def release(self, claim: Claim) -> None:
        await self.db.write_now(lambda conn: sql.give_back(conn, claim.key, claim.token))

    async def aclose(self) -> None:
        return None


_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisClaims:
    backend: ClassVar[str] = "redis"

    def __init__(
        self, url: str, db: Database | None = None, *, prefix: str = "nudge:claim:"
    ) -> None:
        import redis.asyncio as redis

        self.redis = redis.from_url(url)
        self.db = db  # runs ``then``
        self.prefix = prefix
        self._release = self.redis.register_script(_RELEASE)

    async def claim(self, key: str, ttl_s: float, then: Then | None = None) -> ClaimResult:
        token = secrets.token_hex(8)
        name = self.prefix + key
        if await self.redis.set(name, token, nx=True, px=max(math.ceil(ttl_s * 1000), 1)):
            if then is None:
                return ClaimResult(Claim(key, token))
            claim = Claim(key, token)
            try:
                if self.db is None:
                    raise RuntimeError("RedisClaims needs the database to run work with a claim")
                return ClaimResult(claim, then=await self.db.query(then))
            except BaseException:
                await self.release(claim)  # as the SQL claim rolls back with its work
                raise
        left_ms = await self.redis.pttl(name)
        return ClaimResult(None, max(left_ms, 0) / 1000)

    async def release(self, claim: Claim) -> None:
        await self._release(keys=[self.prefix + claim.key], args=[claim.token])

    async def aclose(self) -> None:
        await self.redis.aclose()


class RememberTaken:
    """Wraps a backend: a slot this process saw taken is refused locally until it frees up.

    Apps ask again with every flush (once a second per session) while the slot stays taken for
    30 s; answering those from memory saves a database or Redis round trip per call. It only ever
    refuses: a slot given back early by another process is seen when the remembered time passes.
    """

    def __init__(self, inner: Claims, *, max_keys: int = 100_000) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.max_keys = max_keys
        self._taken_until: dict[str, float] = {}

    async def claim(self, key: str, ttl_s: float, then: Then | None = None) -> ClaimResult:
        now = time.monotonic()
        until = self._taken_until.get(key)
        if until is not None and until > now:
            return ClaimResult(None, until - now)
        result = await self.inner.claim(key, ttl_s, then)
        if len(self._taken_until) >= self.max_keys:
            self._taken_until = {k: u for k, u in self._taken_until.items() if u > now}
        self._taken_until[key] = now + (ttl_s if result.granted else result.retry_after_s)
        return result

    async def release(self, claim: Claim) -> None:
        self._taken_until.pop(claim.key, None)
        await self.inner.release(claim)

    async def aclose(self) -> None:
        await self.inner.aclose()


def build_claims(redis_url: str | None, db: Database) -> Claims:
    """Redis when configured (it already carries the other shared limits), else the database."""
    inner: Claims = RedisClaims(redis_url, db) if redis_url else SqlClaims(db)
    return RememberTaken(inner)
