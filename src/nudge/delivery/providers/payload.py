"""The push providers' shared payload rules: size limits, string data, lifetimes, priorities,
collapse ids.

Every push service refuses payloads over about 4 KB. Rather than let it refuse, a provider asks
:func:`fit` for a message whose rendered payload is within its limit: the body is cut at a
character boundary (never inside a combining sequence or an emoji ZWJ sequence) and ends with
"…"; if even an empty body is too big, the app's own data keys go (largest first), then the title.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from nudge.delivery.providers.base import PushMessage
from nudge.text import json_bytes

ELLIPSIS = "…"
# Keys Nudge itself puts in every notification's data; an app's own keys may be dropped to fit.
PLATFORM_DATA_KEYS = frozenset({"app_id", "notification_id", "type", "navigate_to"})
_JOINERS = {"\u200d"}  # ZERO WIDTH JOINER: glues emoji sequences together
_TOPIC_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
MAX_TTL_S = 28 * 24 * 3600  # the longest FCM and the Web Push services keep a message (4 weeks)

# A notification's priority in each service's terms. ``normal`` (every notification of an app
# written for Omi) sends what was sent before priorities existed: the services' top priority;
# ``low`` lets the service wait for a good moment, ``high`` also breaks through a Focus on iOS.
FCM_PRIORITY = {"high": "high", "normal": "high", "low": "normal"}  # android.priority
APNS_PRIORITY = {"high": "10", "normal": "10", "low": "5"}  # apns-priority
# aps.interruption-level; normal sends none (Apple's default is "active", as before).
INTERRUPTION_LEVEL = {"high": "time-sensitive", "low": "passive"}
URGENCY = {"high": "high", "normal": "high", "low": "low"}  # Web Push Urgency (RFC 8030 5.3)


def compact_json(value: Any) -> bytes:
    return json_bytes(value, allow_nan=True)


def _extends_previous(ch: str) -> bool:
    """True when ``ch`` belongs to the character before it (so we must not cut before it)."""
    code = ord(ch)
    return (
        unicodedata.combining(ch) != 0
        or unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or ch in _JOINERS
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= code <= 0xE007F  # tag characters (flag sequences)
    )


def cut_text(text: str, chars: int) -> str:
    """The first ``chars`` characters of ``text`` (moved back to a safe boundary) plus "…"."""
    if chars >= len(text):
        return text
    n = max(chars, 0)
    while n > 0 and (_extends_previous(text[n]) or text[n - 1] in _JOINERS):
        n -= 1
    # Regional-indicator flags come in pairs: never keep half a flag.
    lead = n
    while lead > 0 and 0x1F1E6 <= ord(text[lead - 1]) <= 0x1F1FF:
        lead -= 1
    if (n - lead) % 2:
        n -= 1
    return text[:n].rstrip() + ELLIPSIS


def _longest_fitting(text: str, limit: int, size_with: Callable[[str], int]) -> str | None:
    """The longest cut of ``text`` whose rendered size is within ``limit`` (None if none is)."""
    if size_with(text) <= limit:
        return text
    lo, hi = 0, len(text) - 1  # invariant: a cut to ``lo`` characters fits
    if size_with(cut_text(text, 0)) > limit:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if size_with(cut_text(text, mid)) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return cut_text(text, lo)


def fit(message: PushMessage, size: Callable[[PushMessage], int], limit: int) -> PushMessage:
    """``message``, shortened as little as possible so that ``size(message) <= limit``.

    If nothing can make it fit (the limit is smaller than the fixed parts) the message comes back
    as short as we can make it, and the provider's own answer will say why it was refused.
    """
    if size(message) <= limit:
        return message
    body = _longest_fitting(message.body, limit, lambda b: size(replace(message, body=b)))
    if body is not None:
        return replace(message, body=body)
    shorter = replace(message, body=cut_text(message.body, 0))
    extras = sorted(
        (k for k in shorter.data if k not in PLATFORM_DATA_KEYS),
        key=lambda k: len(compact_json({k: shorter.data[k]})),
        reverse=True,
    )
    for key in extras:
        shorter = replace(shorter, data={k: v for k, v in shorter.data.items() if k != key})
        if size(shorter) <= limit:
            return fit(replace(shorter, body=message.body), size, limit)
    title = _longest_fitting(shorter.title, limit, lambda t: size(replace(shorter, title=t)))
    return replace(shorter, title=title if title is not None else cut_text(shorter.title, 0))


def string_data(data: dict[str, Any]) -> dict[str, str]:
    """Push data maps carry strings only: other JSON values travel JSON-encoded."""
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        for k, v in data.items()
    }


def expiry(message: PushMessage, max_age_s: float) -> float:
    """When the message is no longer worth showing: the sender's ``ttl`` ran out, or (without
    one) our own max age from when it was due, after which we would give up on it."""
    if message.expires_at is not None:
        return message.expires_at
    return max(message.created_at, message.send_at or 0.0) + max_age_s


def remaining_ttl(message: PushMessage, max_age_s: float, now: float | None = None) -> int:
    """Seconds the provider may keep the message (until :func:`expiry`, at most 4 weeks)."""
    left = expiry(message, max_age_s) - (time.time() if now is None else now)
    return min(max(0, int(left)), MAX_TTL_S)


def collapse_id(key: str, max_bytes: int = 64) -> str:
    """APNs ``apns-collapse-id``: an ASCII header value of at most 64 bytes. A key that is not
    one becomes its SHA-256 (hex, cut to fit), so equal keys still collapse together."""
    if key.isascii() and key.isprintable() and len(key) <= max_bytes:
        return key
    return hashlib.sha256(key.encode()).hexdigest()[:max_bytes]


def topic(key: str) -> str:
    """Web Push ``Topic``: at most 32 characters of the base64url alphabet (RFC 8030 5.4)."""
    if _TOPIC_RE.match(key):
        return key
    digest = hashlib.sha256(key.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:32]
