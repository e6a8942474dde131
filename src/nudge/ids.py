"""Identifiers and secrets.

IDs are time-ordered (millisecond timestamp then randomness) so that "newest first" and cursors
are a plain ordering on the id. Secrets are shown once; only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

APP_SECRET_RE = re.compile(r"^sk_[0-9a-f]{32}$")
USER_TOKEN_RE = re.compile(r"^ut_[0-9a-f]{48}$")  # what new_user_token makes


def new_id(prefix: str) -> str:
    millis = int(time.time() * 1000)
    return f"{prefix}_{millis:012x}{secrets.token_hex(5)}"


def id_floor(prefix: str, timestamp: float) -> str:
    """The smallest id ``new_id(prefix)`` can make at ``timestamp``: every id made earlier sorts
    below it, so "older than" is a range on the primary key."""
    return f"{prefix}_{int(timestamp * 1000):012x}"


def id_time(id_: str) -> float:
    """The time (to the millisecond) at which ``new_id`` made ``id_``."""
    _, _, body = id_.partition("_")
    return int(body[:12], 16) / 1000


def new_app_secret() -> str:
    """An Omi-style app secret: ``sk_`` + 32 hex characters."""
    return "sk_" + secrets.token_hex(16)


def new_user_token() -> str:
    return "ut_" + secrets.token_hex(24)


def new_webhook_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` + base64 of 24 random bytes."""
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def hash_secret(raw: str) -> str:
    """SHA-256 of the raw part of a secret (the part after the ``sk_``/``ut_`` prefix)."""
    _, _, body = raw.partition("_")
    return hashlib.sha256(body.encode()).hexdigest()
