"""What the push providers share about HTTP: many cheap connections to one service, and the
reading of answers that a provider's own error table does not name.

Providers speak httpx: they post through :class:`Connections` and read ``httpx.Response``
objects, and a network failure is an ``httpx.HTTPError``. Under that, the connections to FCM and
to Web Push services are aiohttp's by default: its connection pool and C HTTP/1.1 parser cost a
fraction of httpx's own per request, and a delivery worker's CPU goes mostly to these requests
(docs/delivery.md, Benchmark). ``NUDGE_PUSH_HTTP_TRANSPORT=httpx`` goes back to httpx's own
connections (HTTP/2 where the service offers it, and HTTPS_PROXY followed). APNs is HTTP/2 only,
which aiohttp does not speak, so it always uses httpx's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Literal, Protocol

import aiohttp
import httpx

from nudge.config import Settings
from nudge.delivery.backoff import parse_retry_after
from nudge.delivery.providers.base import Outcome, SendResult

TransportName = Literal["aiohttp", "httpx"]
TRANSPORTS: tuple[TransportName, ...] = ("aiohttp", "httpx")
TIMEOUT = httpx.Timeout(15.0, connect=2.0)

# aiohttp's failures as the httpx errors providers catch (the first that matches).
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (TimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ClientOSError, httpx.NetworkError),
    (aiohttp.ClientError, httpx.RemoteProtocolError),  # cut short or malformed answers
)


class Connections(Protocol):
    """Up to ``count`` open connections to a service; ``post`` returns the whole answer."""

    async def post(
        self, url: str, *, content: bytes, headers: Mapping[str, str]
    ) -> httpx.Response: ...

    async def aclose(self) -> None: ...


class AiohttpConnections:
    """Requests sent with aiohttp, answers returned as ``httpx.Response``.

    Measured per request against the local FCM fake: this costs about a third of an
    ``httpx.AsyncClient`` request, and about 30 % less than an httpx transport over aiohttp
    (the httpx-aiohttp package), whose cost is building and converting ``httpx.Request``.
    """

    def __init__(self, count: int, *, timeout: httpx.Timeout = TIMEOUT) -> None:
        self._count = count
        self._tls = httpx.create_ssl_context()  # one context: loading the CA bundle is slow
        self._timeout = aiohttp.ClientTimeout(
            connect=timeout.pool, sock_connect=timeout.connect, sock_read=timeout.read
        )
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        """The session, made on first use (inside the running event loop)."""
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._count, ssl=self._tls),
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            # httpx.Response decodes the body, as it does for httpx's own answers.
            auto_decompress=False,
            headers={"Accept-Encoding": "gzip, deflate"},
            # No trust_env: aiohttp would read ~/.netrc in a thread on every request (and send
            # its credentials), so HTTPS_PROXY is not followed here; the httpx transport does.
        )

    async def post(self, url: str, *, content: bytes, headers: Mapping[str, str]) -> httpx.Response:
        if self._session is None:
            self._session = self._open()
        try:
            async with self._session.post(
                url, data=content, headers=headers, allow_redirects=False
            ) as answer:
                body = await answer.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _httpx_error(exc) from exc
        return httpx.Response(answer.status, headers=answer.raw_headers, content=body)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _httpx_error(exc: Exception) -> httpx.TransportError:
    message = str(exc) or type(exc).__name__
    for theirs, ours in _ERRORS:
        if isinstance(exc, theirs):
            return ours(message)
    return httpx.TransportError(message)


class HttpxConnections:
    """``count`` single-connection httpx clients, each carrying one request at a time.

    httpx's connection pool re-examines every connection (a ``poll()`` each) on every request,
    so its cost per request grows with the pool: at 128 connections it spent more CPU than
    everything else in the worker together. Here each client's pool holds one connection and an
    idle queue hands clients out in O(1), which keeps many connections open (needed against a
    distant service) at the price of one.
    """

    def __init__(self, count: int, *, timeout: httpx.Timeout = TIMEOUT) -> None:
        tls = httpx.create_ssl_context()
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self._clients = [
            httpx.AsyncClient(http2=True, timeout=timeout, limits=limits, verify=tls)
            for _ in range(count)
        ]
        self._idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for client in self._clients:
            self._idle.put_nowait(client)

    async def post(self, url: str, *, content: bytes, headers: Mapping[str, str]) -> httpx.Response:
        client = await self._idle.get()
        try:
            return await client.post(url, content=content, headers=headers)
        finally:
            self._idle.put_nowait(client)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


def open_connections(settings: Settings, count: int) -> Connections:
    """``count`` connections of the kind ``NUDGE_PUSH_HTTP_TRANSPORT`` names."""
    name = settings.push_http_transport
    if name == "aiohttp":
        return AiohttpConnections(count)
    if name == "httpx":
        return HttpxConnections(count)
    raise ValueError(f"NUDGE_PUSH_HTTP_TRANSPORT={name!r}: use one of {', '.join(TRANSPORTS)}")


def retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("retry-after"))


def unreachable(service: str, exc: Exception) -> SendResult:
    """A network-level failure: the service may be back soon, so try again later."""
    return SendResult(Outcome.RETRY, f"{service} unreachable: {type(exc).__name__}: {exc}")


def http_fallback(service: str, response: httpx.Response, detail: str) -> SendResult:
    """An answer the provider's own table does not name: 5xx and 429 retry, 4xx fail."""
    reason = f"{service} {response.status_code}: {detail}"
    if response.status_code == 429 or response.status_code >= 500:
        return SendResult(Outcome.RETRY, reason, retry_after(response))
    return SendResult(Outcome.FAILED, reason)
