"""The little ASGI plumbing the fakes share, and a way to serve them (in-process or not)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Request:
    method: str
    path: str
    http_version: str
    headers: dict[str, str]  # lower-cased names; a repeated name keeps the last value
    header_names: list[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """One scripted or computed answer."""

    status: int
    body: Any = None  # dict/list -> JSON, bytes/str -> as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # answer this much later (a slow service)


class Script:
    """Per-key scripted answers: a queue used up in order, then an optional answer forever."""

    def __init__(self) -> None:
        self._queued: dict[str, deque[Reply]] = {}
        self._forever: dict[str, Reply] = {}

    def queue(self, key: str, *replies: Reply) -> None:
        self._queued.setdefault(key, deque()).extend(replies)

    def always(self, key: str, reply: Reply) -> None:
        self._forever[key] = reply

    def next(self, key: str) -> Reply | None:
        queued = self._queued.get(key)
        if queued:
            return queued.popleft()
        return self._forever.get(key)


async def read_request(scope: Scope, receive: Receive) -> Request:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    names = [k.decode("latin-1").lower() for k, _ in scope["headers"]]
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    return Request(
        scope["method"],
        scope["path"],
        scope.get("http_version", ""),
        headers,
        names,
        b"".join(chunks),
    )


async def respond(send: Send, reply: Reply) -> None:
    if reply.delay_s:
        await asyncio.sleep(reply.delay_s)
    if isinstance(reply.body, (dict, list)):
        body = json.dumps(reply.body).encode()
        content_type = "application/json; charset=UTF-8"
    elif isinstance(reply.body, str):
        body, content_type = reply.body.encode(), "text/plain; charset=utf-8"
    else:
        body, content_type = reply.body or b"", "application/octet-stream"
    headers = {"content-type": content_type, **{k.lower(): v for k, v in reply.headers.items()}}
    await send(
        {
            "type": "http.response.start",
            "status": reply.status,
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        }
    )
    await send({"type": "http.response.body", "body": body})


Handler = Callable[[Request], Awaitable[Reply]]


def asgi_app(handle: Handler) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An ASGI app from ``handle(request) -> Reply`` (lifespan events are acknowledged)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        await respond(send, await handle(await read_request(scope, receive)))

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serve(app: Any, *, port: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` with hypercorn in this event loop: HTTP/1.1 and HTTP/2 over cleartext (h2c,
    by prior knowledge or upgrade) on one port. Yields the base URL."""
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    port = port or free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.5
    config.h2_max_concurrent_streams = 1000
    config.keep_alive_max_requests = 1_000_000  # no GOAWAY after 1,000 requests
    stop = asyncio.Event()
    task = asyncio.create_task(hypercorn_serve(app, config, shutdown_trigger=stop.wait))
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        except OSError:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
