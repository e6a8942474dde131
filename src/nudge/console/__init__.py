"""The web console: a live notification feed, a conversation simulator and the trace view.

The pages are plain HTML, CSS and JavaScript in ``static/`` (no build step), served by
``nudge.api.console``. They call the public API with the token given at login; the helpers here
answer what the API has no call for: who a token belongs to, the list of users (admin), and what
the platform knows of a user (facts, with the app that imported each, and latest conversations).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from nudge.core.users import get_user
from nudge.store import accounts

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


def static_file(name: str) -> Path | None:
    """A file of ``static/`` by its bare name (no paths, known types only)."""
    path = STATIC / name
    if "/" in name or "\\" in name or path.suffix not in MEDIA_TYPES or not path.is_file():
        return None
    return path


def user_knowledge(conn: Connection, uid: str, limit: int) -> dict[str, Any]:
    """The user's newest facts and conversations (imported ones name their app)."""
    get_user(conn, uid)
    return accounts.knowledge(conn, uid, limit)
