"""Failed authentications per client address, in this process (docs/security.md).

After ``limit`` refused credentials from one address within ``window_s`` of its first, its
requests carrying a credential are answered 429 until the window ends (a bounded, per-process dict).
"""

from __future__ import annotations

import ipaddress
import math
import time

# At most this many addresses are watched; when full, expired entries go first, then the oldest.
CAPACITY = 10_000


def client_key(host: str) -> str:
    """The key an address is counted under: IPv4 as is, IPv6 by its /64 (one host's usual
    share, so stepping through the addresses of one network does not start afresh)."""
    if ":" not in host:
        return host
    try:
        return ipaddress.IPv6Network((host, 64), strict=False).with_prefixlen
    except ValueError:
        return host


class AuthFailures:
    def __init__(self, limit: int, window_s: float, capacity: int = CAPACITY) -> None:
        self.limit = limit
        self.window_s = window_s
        self.capacity = capacity
        # key -> [monotonic time the window ends, failures in it]
        self._watched: dict[str, list[float]] = {}

    def __bool__(self) -> bool:
        """Whether any address is watched (there is nothing to look up otherwise)."""
        return bool(self._watched)

    def retry_after(self, key: str, now: float | None = None) -> int:
        """Seconds until ``key`` may present a credential again (0: it may now)."""
        watch = self._watched.get(key)
        if watch is None or watch[1] < self.limit:
            return 0
        now = time.monotonic() if now is None else now
        if now >= watch[0]:
            del self._watched[key]
            return 0
        return max(1, math.ceil(watch[0] - now))

    def failed(self, key: str, now: float | None = None) -> bool:
        """Count a refused credential; True when this failure starts the block."""
        now = time.monotonic() if now is None else now
        watch = self._watched.get(key)
        if watch is None or now >= watch[0]:
            self._make_room(now)
            watch = self._watched[key] = [now + self.window_s, 0]
        watch[1] += 1
        return watch[1] == self.limit

    def _make_room(self, now: float) -> None:
        if len(self._watched) < self.capacity:
            return
        for key in [k for k, (ends, _) in self._watched.items() if now >= ends]:
            del self._watched[key]
        while len(self._watched) >= self.capacity:
            del self._watched[next(iter(self._watched))]
