"""Retry timing (SDK and server): jittered exponential backoff that honours a Retry-After."""

from __future__ import annotations

import random


def retry_delay(
    attempts: int,
    *,
    base_s: float,
    max_s: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt ``attempts + 1`` ("equal jitter": half fixed, half random).

    A provider's ``Retry-After`` is a floor: we never come back sooner than it asked.
    """
    ceiling = min(max_s, base_s * (2 ** max(attempts - 1, 0)))
    delay = ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import time
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
