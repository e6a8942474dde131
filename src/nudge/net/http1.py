"""A minimal HTTP/1.1 keep-alive client for webhook calls: asyncio + httptools' C response parser.

Webhook calls are the hottest outbound path and their CPU limits a busy process; this client
spends a fraction of httpx's or aiohttp's per call (docs/decisions.md, docs/performance.md), and
does only what webhooks need: no redirects followed, bodies capped at ``limit``, idle connections
pooled per origin and reused only after a complete answer. Where to connect is the caller's
decision (``address_for``, ``check_peer``: the SSRF guard); the URL's name stays in ``Host``, TLS
SNI and certificate checks. Every failure of the exchange is an :class:`HTTPError` saying what
happened."""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote, unquote, urlsplit

import httptools

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")  # needs no percent-encoding anywhere in a URL


class HTTPError(Exception):
    """The exchange failed (bad URL, no connection, broken or non-HTTP answer); says why."""


@dataclass(slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes
    error: str | None  # set when the body was cut off at the limit
    peer: str  # "address:port" actually connected to


@dataclass(frozen=True, slots=True)
class _Target:
    """A URL, parsed once: where to connect and the fixed part of the request head."""

    origin: tuple[str, str, int]  # scheme, host, port: the pool key
    tls: bool
    host: str
    port: int
    path: str  # path and query, percent-encoded
    fixed_headers: str  # host, user-agent, authorization from the URL's credentials


class _Connection(asyncio.Protocol):
    """One connection; one exchange at a time. httptools calls the ``on_*`` methods."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None  # set while an exchange runs
        self.reusable = False  # an answer was read completely and the server keeps the link
        self.peer = ""
        self.idle_since = 0.0
        self._reset(0)

    def _reset(self, limit: int) -> None:
        self.limit = limit
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.chunks: list[bytes] = []
        self.size = 0

    def exchange(self, request: bytes, limit: int) -> asyncio.Future[Answer]:
        assert self.transport is not None and self.waiter is None
        self._reset(limit)
        self.reusable = False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for: this connection cannot be trusted
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(HTTPError("the server switched protocols (HTTP upgrade): not for webhooks"))
        except httptools.HttpParserError as exc:
            detail = str(exc) or type(exc).__name__
            self.fail(HTTPError(f"the answer is not valid HTTP/1.1 ({detail})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self.waiter is None:
            return
        no_length = "content-length" not in self.headers
        if self.headers_done and no_length and "transfer-encoding" not in self.headers:
            self._answer(None)  # a body delimited by the end of the connection (HTTP/1.0 style)
        elif self.status:
            self.fail(HTTPError("the connection closed before the answer was complete"))
        else:
            self.fail(HTTPError("the connection closed without an answer"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.waiter is None:  # a second answer to one request
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        if self.waiter is None:
            return
        self.size += len(body)
        self.chunks.append(body)
        if self.size > self.limit:
            self._answer(f"answer over {self.limit} bytes; cut off")
            self.close()  # the rest is never read

    def on_message_complete(self) -> None:
        if self.waiter is None:
            return
        keep = self.status >= 200 and self.parser.should_keep_alive()
        self._answer(None)
        self.reusable = keep

    def _answer(self, error: str | None) -> None:
        waiter, self.waiter = self.waiter, None
        body = b"".join(self.chunks)[: self.limit]
        if waiter is not None and not waiter.done():
            waiter.set_result(Answer(self.status, self.headers, body, error, self.peer))

    def fail(self, exc: Exception) -> None:
        """End the exchange with ``exc`` (also the timer's way to end a hang) and the connection."""
        waiter, self.waiter = self.waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


def _encoded(text: str) -> str:
    """``text`` as a query name or value (ids, the usual case, are checked, not re-encoded)."""
    return text if _PLAIN.fullmatch(text) else quote(text, safe="")


def _parse(url: str, user_agent: str) -> _Target:
    """Raises :class:`HTTPError` for what cannot be called."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https"):
            raise HTTPError(f"only http:// and https:// URLs can be called, not {url[:200]!r}")
        if not host:
            raise HTTPError(f"no host in the URL {url[:200]!r}")
        host = host if host.isascii() else host.encode("idna").decode("ascii")
    except (ValueError, UnicodeError) as exc:
        raise HTTPError(f"invalid URL {url[:200]!r}: {exc}") from None
    tls = parts.scheme == "https"
    default = 443 if tls else 80
    port = port or default
    named = f"[{host}]" if ":" in host else host
    fixed = f"host: {named if port == default else f'{named}:{port}'}\r\n"
    fixed += f"user-agent: {user_agent}\r\n"
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        fixed += f"authorization: Basic {base64.b64encode(pair.encode()).decode()}\r\n"
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_QUERY_SAFE)
    return _Target((parts.scheme, host, port), tls, host, port, path, fixed)


class HTTP1Client:
    """Requests over pooled keep-alive connections (see the module docstring)."""

    def __init__(
        self,
        *,
        address_for: Callable[[str, int], Awaitable[str]],
        check_peer: Callable[[str], None],
        connect_timeout_s: float,
        user_agent: str,
        ssl_context: ssl.SSLContext | None = None,
        max_idle_per_origin: int = 32,
        # Below common servers' keep-alive timeouts (uvicorn 5 s, nginx 75 s): we close an idle
        # connection before the server does, rather than racing its close with a new request.
        idle_timeout_s: float = 4.0,
    ) -> None:
        self.address_for = address_for
        self.check_peer = check_peer
        self.connect_timeout_s = connect_timeout_s
        self.user_agent = user_agent
        self.max_idle_per_origin = max_idle_per_origin
        self.idle_timeout_s = idle_timeout_s
        self._ssl = ssl_context
        self._targets: dict[str, _Target] = {}
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False  # after aclose: connections are closed, not pooled

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        limit: int,
        timeout_s: float,
    ) -> Answer:
        """One exchange, all of it (resolving, connecting, the answer) within ``timeout_s``; the
        answer's body at most ``limit`` bytes (``Answer.error`` says when it was longer).

        Raises :class:`HTTPError`, :class:`TimeoutError`, or what ``address_for`` and
        ``check_peer`` raise."""
        if method not in METHODS:
            raise HTTPError(f"method {method[:20]!r} is not supported")
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) > 10_000:
                self._targets.clear()
            target = self._targets[url] = _parse(url, self.user_agent)
        path = target.path
        if params:
            query = "&".join([f"{_encoded(k)}={_encoded(v)}" for k, v in params.items()])
            path += ("&" if "?" in path else "?") + query
        lines = [f"{name}: {value}\r\n" for name, value in (headers or {}).items()]
        extra = "".join(lines)
        if extra.count("\n") != len(lines) or extra.count("\r") != len(lines):
            raise HTTPError("a header name or value contains a line break")
        if not extra.isascii():
            raise HTTPError("a header name or value is not ASCII")
        if body or method != "GET":
            extra += f"content-length: {len(body)}\r\n"
        head = f"{method} {path} HTTP/1.1\r\n{target.fixed_headers}{extra}\r\n"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        connection = self._take(target.origin)
        if connection is None:
            async with asyncio.timeout_at(deadline):
                connection = await self._connect(target)
        # One timer on the loop, not asyncio.timeout's task machinery: cheaper per call.
        timer = loop.call_at(deadline, connection.fail, TimeoutError())
        try:
            answer = await connection.exchange(head.encode("latin-1") + body, limit)
        except BaseException:
            connection.close()
            raise
        finally:
            timer.cancel()
        self._put_back(target.origin, connection)
        encoding = answer.headers.get("content-encoding", "identity")
        if encoding != "identity":
            raise HTTPError(f"the answer is {encoding[:40]}-encoded, which was not asked for")
        return answer

    async def _connect(self, target: _Target) -> _Connection:
        address = await self.address_for(target.host, target.port)
        context = None
        if target.tls:
            context = self._ssl = self._ssl or ssl.create_default_context()
        where = f"cannot connect to {target.host}:{target.port}"
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                transport, connection = await asyncio.get_running_loop().create_connection(
                    _Connection,
                    address,
                    target.port,
                    ssl=context,
                    server_hostname=target.host if context else None,
                )
        except TimeoutError:
            raise HTTPError(f"{where}: no connection within {self.connect_timeout_s:g} s") from None
        except OSError as exc:
            raise HTTPError(f"{where}: {exc.strerror or exc}") from None
        try:
            peer = transport.get_extra_info("peername")
            self.check_peer(peer[0])
        except BaseException:
            transport.close()
            raise
        connection.peer = f"{peer[0]}:{peer[1]}"
        return connection

    def _take(self, origin: tuple[str, str, int]) -> _Connection | None:
        """The most recently used idle connection to ``origin`` that is still good."""
        idle = self._idle.get(origin)
        oldest = time.monotonic() - self.idle_timeout_s
        while idle:
            connection = idle.pop()
            if connection.reusable and connection.idle_since > oldest:
                return connection
            connection.close()
        return None

    def _put_back(self, origin: tuple[str, str, int], connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if self._closed or not connection.reusable or len(idle) >= self.max_idle_per_origin:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.idle_timeout_s, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle for longer than ``idle_timeout_s``; run again while any
        connection is idle."""
        self._sweeper = None
        oldest = time.monotonic() - self.idle_timeout_s
        for origin, idle in list(self._idle.items()):
            fresh = []
            for connection in idle:
                if connection.reusable and connection.idle_since > oldest:
                    fresh.append(connection)
                else:
                    connection.close()
            if fresh:
                self._idle[origin] = fresh
            else:
                del self._idle[origin]
        if self._idle:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.idle_timeout_s, self._sweep)

    async def aclose(self) -> None:
        """Close the idle connections (calls still running close theirs when they end)."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
