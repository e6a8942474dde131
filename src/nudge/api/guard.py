"""The outermost ASGI middleware: bounded requests and failed-authentication throttling.

Ahead of everything, before any credential is looked at: an over-long query string is a 414, an
over-large body a 413 (from ``Content-Length``, or as a chunked body is read), an address with too
many refused credentials (:mod:`nudge.api.throttle`) a 429; answers 401/403 (and sockets closed
with 1008) are counted on their way out (docs/security.md)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nudge.api.errors import TooLarge, TooLong, respond_error
from nudge.api.throttle import AuthFailures, client_key
from nudge.config import Settings
from nudge.errors import RateLimited

log = logging.getLogger("nudge.api")

REFUSED_CREDENTIAL = (401, 403)
# What the app receives once the guard has answered for it: the request is over.
_DISCONNECT: Message = {"type": "http.disconnect"}


def _has_credential(scope: Scope) -> bool:
    if any(name == b"authorization" for name, _ in scope["headers"]):
        return True
    return scope["type"] == "websocket" and b"token=" in scope["query_string"]


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return client_key(client[0] if client else "")


@dataclass(slots=True)
class _Exchange:
    """One request: its answer is watched for refused credentials; a body whose length is not
    known up front is counted as the app reads it, and over the limit the guard answers 413
    and the app's own answer is dropped."""

    guard: RequestGuard
    scope: Scope
    receive: Receive
    send: Send
    seen: int = 0
    started: bool = False
    answered: bool = False

    async def counted_receive(self) -> Message:
        if self.answered:
            return _DISCONNECT
        message = await self.receive()
        self.seen += len(message.get("body", b""))
        if self.seen <= self.guard.max_body:
            return message
        if not self.started:
            self.answered = True
            await self.guard.too_large(self.send)
        return _DISCONNECT

    async def observed_send(self, message: Message) -> None:
        if self.answered:
            return
        if message["type"] == "http.response.start":
            self.started = True
            if message["status"] in REFUSED_CREDENTIAL:
                self.guard.count_failure(self.scope)
        await self.send(message)


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_body = settings.max_body_bytes
        self.max_query = settings.max_query_bytes
        self.failures = AuthFailures(settings.auth_failure_limit, settings.auth_failure_window_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _blocked(self, scope: Scope) -> int:
        """Seconds the client must wait before presenting a credential (0: none)."""
        if not self.failures or not _has_credential(scope):
            return 0
        return self.failures.retry_after(_client(scope))

    def count_failure(self, scope: Scope) -> None:
        key = _client(scope)
        if self.failures.failed(key):
            blocked = {"failures": self.failures.limit, "window_s": self.failures.window_s}
            log.warning("refused credentials: address blocked", extra={"client": key, **blocked})

    async def too_large(self, send: Send) -> None:
        detail = (
            f"request body: over {self.max_body} bytes (NUDGE_MAX_BODY_BYTES); "
            "send fewer items per request"
        )
        await respond_error(send, TooLarge(detail))

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if len(scope["query_string"]) > self.max_query:
            detail = (
                f"query string: over {self.max_query} bytes (NUDGE_MAX_QUERY_BYTES); "
                "send long text in a JSON body"
            )
            await respond_error(send, TooLong(detail), scope["path"])
            return
        wait = self._blocked(scope)
        if wait:
            detail = f"too many refused credentials from this address: retry in {wait} s"
            await respond_error(send, RateLimited(detail, retry_after=wait), scope["path"])
            return
        exchange = _Exchange(self, scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length":
                # Digits (the server refuses any other Content-Length), and the server holds
                # the body to it: only the answer needs watching.
                if int(value) > self.max_body:
                    await self.too_large(send)
                    return
                await self.app(scope, receive, exchange.observed_send)
                return
        await self.app(scope, exchange.counted_receive, exchange.observed_send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._blocked(scope):
            await send({"type": "websocket.close", "code": 1008})
            return

        async def observed(message: Message) -> None:
            if message["type"] == "websocket.close" and message.get("code") == 1008:
                self.count_failure(scope)
            await send(message)

        await self.app(scope, receive, observed)
