"""Small helpers for the routes served as plain ASGI (the direct route, the segments POST)."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Scope, Send


def first_headers(scope: Scope, *names: bytes) -> list[str | None]:
    """The first value of each header named (lower-case), in the order asked; None if absent."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in names and name not in found:
            found[name] = value.decode("latin-1")
    return [found.get(name) for name in names]


async def respond_json(
    send: Send, status: int, content: dict[str, Any], headers: dict[str, str]
) -> None:
    """Answer with JSON: the same bytes as Starlette's ``JSONResponse``."""
    body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    raw = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
