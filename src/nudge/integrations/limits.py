"""Omi's limits on the integration API: a fixed window of N requests per app and user, counted as
Omi counts them (a refused request counts too), in the database or in Redis (docs/omi.md)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from nudge.core.notifications import RateLimit
from nudge.errors import RateLimited
from nudge.store.db import Database
from nudge.store.notifications import hit_counter

WINDOW_S = 3600.0


@dataclass(frozen=True)
class Policy:
    name: str  # Omi's policy name, also the counter's key prefix
    limit: int  # requests per app and user per window


@dataclass(frozen=True)
class Hit:
    count: int  # requests in the window, this one included
    reset_s: float  # until the window ends


# INCR, and the expiry on the window's first request (Omi's script does the same, atomically).
_HIT = """
local count = redis.call('incr', KEYS[1])
if count == 1 then redis.call('pexpire', KEYS[1], ARGV[1]) end
return {count, redis.call('pttl', KEYS[1])}
"""


class Counters:
    """Request counts per key and window: in the database, or in Redis when a URL is given."""

    def __init__(
        self, db: Database, redis_url: str | None = None, *, prefix: str = "nudge:limit:"
    ) -> None:
        self.db = db
        self.prefix = prefix
        self.redis: Any = None
        if redis_url:
            import redis.asyncio as redis

            self.redis = redis.from_url(redis_url)
            self._hit = self.redis.register_script(_HIT)

    async def hit(self, key: str, window_s: float) -> Hit:
        """Count one request under ``key`` in its current window."""
        if self.redis is None:
            return Hit(
                *await self.db.write_now(lambda c: hit_counter(c, key, time.time(), window_s))
            )
        count, left_ms = await self._hit(
            keys=[self.prefix + key], args=[max(math.ceil(window_s * 1000), 1)]
        )
        return Hit(int(count), max(int(left_ms), 0) / 1000)

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()


async def take(counters: Counters, policy: Policy, app_id: str, uid: str) -> RateLimit:
    """Count a request of ``app_id`` for ``uid``; the window's state for the headers, or 429."""
    hit = await counters.hit(f"{policy.name}:{app_id}:{uid}", WINDOW_S)
    reset = max(math.ceil(hit.reset_s), 1)
    rate = RateLimit(policy.limit, max(policy.limit - hit.count, 0), reset)
    if hit.count > policy.limit:
        raise RateLimited(
            f"rate limited: at most {policy.limit} requests per user per hour for this app "
            f"({policy.name}); retry in {reset} s",
            retry_after=reset,
            headers=rate.headers(),
        )
    return rate
