"""The proactive rate limit as an atomic claim: "this (user, app) slot is taken for 30 s".

Taken before the LLM runs and given back when nothing is sent, so across every process at most
one proactive notification per user per app goes out per interval: in the database (the
``rate_claims`` table) or in Redis when ``NUDGE_REDIS_URL`` is set. In the database :func:`take`
is a work function the pipeline composes with its reads into one unit of work."""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import Connection

from nudge.store import claims as sql
from nudge.store.db import Database


@dataclass(frozen=True)
class Claim:
    key: str
    token: str


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim | None  # None: the slot is taken
    retry_after_s: float = 0.0  # when taken: how long until it frees up

    @property
    def granted(self) -> bool:
        return self.claim is not None


def take(conn: Connection, key: str, ttl_s: float) -> ClaimResult:
    """Take the slot in the database if it is free. One ``INSERT … ON CONFLICT DO UPDATE`` that
    takes the row over only when it expired and returns its holder: atomic on SQLite (writes are
    serialised) and on PostgreSQL (the conflicting row is locked, then re-read)."""
    token = secrets.token_hex(8)
    now = time.time()
    holder, until = sql.take(conn, key, token, now, now + ttl_s)
    if holder == token:
        return ClaimResult(Claim(key, token))
    return ClaimResult(None, max(until - now, 0.0))


_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class Claims:
    """This process's claims: in the database, or in Redis when a URL is given. A slot seen
    taken is refused from memory until it frees up (apps ask again with every flush while it stays
    taken for 30 s); a slot given back early elsewhere is seen when the remembered time passes."""

    def __init__(
        self,
        db: Database,
        redis_url: str | None = None,
        *,
        max_keys: int = 100_000,
        prefix: str = "nudge:claim:",
    ) -> None:
        self.db = db
        self.max_keys = max_keys
        self.prefix = prefix
        self._taken_until: dict[str, float] = {}
        self.redis: Any = None
        if redis_url:
            import redis.asyncio as redis

            self.redis = redis.from_url(redis_url)
            self._release = self.redis.register_script(_RELEASE)

    @property
    def backend(self) -> str:
        """``sql`` or ``redis``: where the claims live."""
        return "sql" if self.redis is None else "redis"

    def remembered(self, key: str) -> ClaimResult | None:
        """The refusal, when this process saw the slot taken and it has not freed up since."""
        now = time.monotonic()
        until = self._taken_until.get(key)
        return ClaimResult(None, until - now) if until is not None and until > now else None

    def remember(self, key: str, ttl_s: float, result: ClaimResult) -> ClaimResult:
        """Note until when the slot is taken (by us, when ``result`` won it); returns ``result``."""
        now = time.monotonic()
        if len(self._taken_until) >= self.max_keys:
            self._taken_until = {k: u for k, u in self._taken_until.items() if u > now}
        self._taken_until[key] = now + (ttl_s if result.granted else result.retry_after_s)
        return result

    async def claim(self, key: str, ttl_s: float) -> ClaimResult:
        """Take the slot on its own: in Redis, or in a database transaction of its own."""
        if (refused := self.remembered(key)) is not None:
            return refused
        if self.redis is None:
            result = await self.db.write_now(partial(take, key=key, ttl_s=ttl_s))
        else:
            token, name = secrets.token_hex(8), self.prefix + key
            if await self.redis.set(name, token, nx=True, px=max(math.ceil(ttl_s * 1000), 1)):
                result = ClaimResult(Claim(key, token))
            else:
                result = ClaimResult(None, max(await self.redis.pttl(name), 0) / 1000)
        return self.remember(key, ttl_s, result)

    async def release(self, claim: Claim) -> None:
        """Give a slot back (only if it is still ours)."""
        self._taken_until.pop(claim.key, None)
        if self.redis is None:
            await self.db.write_now(lambda conn: sql.give_back(conn, claim.key, claim.token))
        else:
            await self._release(keys=[self.prefix + claim.key], args=[claim.token])

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
