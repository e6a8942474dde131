"""How ``nudge serve`` runs uvicorn: its limits, and a protocol that bounds a request's arrival.

uvicorn's httptools protocol lets a client trickle its head or body for as long as it likes and
gathers the head without limit. :class:`BoundedHttpToolsProtocol` adds, per connection, the head
and body timeouts and the head size limit of docs/security.md. A request only notes its deadline
(a clock read); one timer per connection looks at it when it fires and re-arms itself (on uvloop,
a timer per request would cost more). The uvicorn version is pinned; tests/api/test_limits.py
runs every bound against a real ``nudge serve``."""

from __future__ import annotations

import asyncio
import http
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from nudge.config import Settings

# How long a refused connection may go on sending (dropped) before it is closed.
LINGER_S = 2.0

# What a connection is waiting for (its deadline applies to the first three).
FIRST_BYTE, HEAD, BODY, NEXT_REQUEST = range(4)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    settings: Settings  # set on the subclass that :func:`server_options` makes

    _timer: asyncio.TimerHandle | None = None
    _waiting_for = FIRST_BYTE
    _deadline = 0.0  # loop time by which what is awaited must have arrived
    _head_fresh = False  # the head began in the data being parsed now
    _head_bytes = 0  # bytes of the head counted so far (all but the read it began in)
    _lingering = False  # refused: what still arrives is dropped until the close

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline = self.loop.time() + self.settings.header_timeout_s
        self._timer = self.loop.call_at(self._deadline, self._check)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        self._head_fresh = False
        super().data_received(data)
        if self._waiting_for != HEAD or self._head_fresh or self.transport.is_closing():
            return
        # All of this read belongs to a head that began in an earlier one.
        self._head_bytes += len(data)
        limit = self.settings.max_header_bytes
        if self._head_bytes <= limit:
            return
        if len(self.url) > self.settings.max_query_bytes:
            detail = f"URL: too long (request line and headers over {limit} bytes)"
            self._refuse(414, f"{detail}; send long text in a JSON body")
        else:
            self._refuse(431, f"headers: over {limit} bytes (NUDGE_MAX_HEADER_BYTES)")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._waiting_for != FIRST_BYTE:  # the first request's head counts from the connection
            self._deadline = self.loop.time() + self.settings.header_timeout_s
        self._waiting_for = HEAD
        self._head_fresh = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._waiting_for = BODY
        self._deadline = self.loop.time() + self.settings.body_timeout_s
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._waiting_for = NEXT_REQUEST
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the connection is the WebSocket protocol's from here
        super().handle_websocket_upgrade()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self._waiting_for == NEXT_REQUEST:  # idle between requests: uvicorn's keep-alive
            self._timer = self.loop.call_at(now + self.settings.header_timeout_s, self._check)
        elif now < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._check)
        elif self._waiting_for == FIRST_BYTE:
            self.transport.close()
        elif self._waiting_for == HEAD:
            timeout = f"{self.settings.header_timeout_s:g} s (NUDGE_HEADER_TIMEOUT_S)"
            self._refuse(408, f"request headers not received within {timeout}")
        elif self.cycle.response_started:  # answered without reading the body: just close
            self.transport.close()
        else:
            timeout = f"{self.settings.body_timeout_s:g} s (NUDGE_BODY_TIMEOUT_S)"
            self._refuse(408, f"request body not received within {timeout}")

    def _refuse(self, status: int, detail: str) -> None:
        """Answer with JSON and end the connection (the request is not passed on). The close
        lingers: closing with unread data sends a reset, which can destroy the answer."""
        body = json.dumps({"detail": detail}).encode()
        phrase = http.HTTPStatus(status).phrase
        head = (
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self._lingering = True
        self._disarm()
        self.transport.write_eof()
        self.flow.resume_reading()
        self._timer = self.loop.call_later(LINGER_S, self.transport.close)


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options for ``nudge serve``: its own limits where it has them, our protocol for
    the rest (docs/security.md)."""
    protocol: type[BoundedHttpToolsProtocol] = type(
        BoundedHttpToolsProtocol.__name__, (BoundedHttpToolsProtocol,), {"settings": settings}
    )
    return {
        "http": protocol,
        # Beyond this many open connections (or requests in progress), requests are answered 503.
        "limit_concurrency": settings.max_connections,
        # A WebSocket message is a request body by another name.
        "ws_max_size": settings.max_body_bytes,
    }
