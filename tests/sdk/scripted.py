"""A tiny real HTTP server that answers from a script (429/503 with Retry-After, ...) and can
forward to the real platform, recording every request it saw."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from tests.conftest import free_port

# Headers the proxy sets itself rather than copying from the upstream's answer.
_OWN = {
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "date",
    "server",
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``forward``: pass the request to the upstream first; then answer with
    the upstream's answer if ``status`` is 0, else with this (the upstream's answer is lost)."""

    status: int = 0
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    forward: bool = False


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival


class ScriptedServer:
    def __init__(self, script: list[Reply], upstream: str | None = None) -> None:
        self.script = list(script)
        self.upstream = upstream
        self.seen: list[Seen] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("scripted server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        more = True
        while more:
            event = await receive()
            body += event.get("body", b"")
            more = event.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = scope["query_string"].decode()
        self.seen.append(Seen(scope["method"], scope["path"], query, headers, time.monotonic()))
        reply = self.script.pop(0) if self.script else Reply(forward=True)
        status, out_headers, out = reply.status, dict(reply.headers), json.dumps(reply.body)
        if reply.forward:
            assert self.upstream, "forward needs an upstream"
            async with httpx.AsyncClient() as http:
                r = await http.request(
                    scope["method"],
                    f"{self.upstream}{scope['path']}" + (f"?{query}" if query else ""),
                    headers={
                        k: v for k, v in headers.items() if k not in ("host", "content-length")
                    },
                    content=body,
                )
            if not status:
                status, out = r.status_code, r.text
                out_headers = {k: v for k, v in r.headers.items() if k.lower() not in _OWN}
        raw = out.encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")]
                + [(k.encode(), v.encode()) for k, v in out_headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": raw})


def over_asgi(app: Any) -> httpx.AsyncClient:
    """A client that makes real HTTP requests to an ASGI app in this process."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test")
