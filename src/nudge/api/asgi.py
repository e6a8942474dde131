"""JSON answers that stored text cannot break, and helpers of the plain-ASGI routes."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import Scope, Send

from nudge.text import json_bytes


class SafeJSONResponse(JSONResponse):
    """Starlette's ``JSONResponse`` (the same bytes), except that a lone surrogate in a row
    stored before the edge checks becomes U+FFFD instead of a 500 (see ``nudge.text``)."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


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
    """Answer with JSON: the same bytes as :class:`SafeJSONResponse`."""
    body = json_bytes(content)
    raw = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
