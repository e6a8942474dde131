"""The push providers' shared HTTP: cheap connections, and answers their own tables don't name.

Providers speak httpx: they post through :class:`Connections` and read ``httpx.Response``
objects, and a network failure is an ``httpx.HTTPError``. Under that, the connections to FCM and
to Web Push services are aiohttp's by default: its connection pool and C HTTP/1.1 parser cost a
fraction of httpx's own per request, and a delivery worker's CPU goes mostly to these requests
(docs/delivery.md, Benchmark). ``NUDGE_PUSH_HTTP_TRANSPORT=httpx`` goes back to httpx's own
connections (HTTP/2 where the service offers it, and HTTPS_PROXY followed). APNs is HTTP/2 only,
which aiohttp does not speak, so it always uses httpx's.

Connections given a :class:`~nudge.net.guard.GuardedResolver` (Web Push: the endpoint is the
browser's choice) connect only to addresses it checked, on either transport; FCM's and APNs'
base URLs are the operator's, so theirs are not guarded.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any, Literal, Protocol

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult

from nudge.config import Settings
from nudge.delivery.providers.base import Outcome, SendResult
from nudge.net.guard import AddressRefused, GuardedResolver
from nudge.sdk.backoff import parse_retry_after

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
    """Up to ``count`` open connections to a service; ``post`` returns the whole answer.

    ``post`` raises ``httpx.HTTPError`` for a network failure, ``httpx.InvalidURL`` for a URL the
    client will not use, and, when guarded, :class:`~nudge.net.guard.AddressRefused`.
    """

    async def post(
        self, url: str, *, content: bytes, headers: Mapping[str, str]
    ) -> httpx.Response: ...

    async def aclose(self) -> None: ...


class AiohttpConnections:
    """Requests sent with aiohttp, answers returned as ``httpx.Response``.

    Cheaper per request than an ``httpx.AsyncClient`` and than an httpx transport over aiohttp
    (the httpx-aiohttp package), whose cost is building and converting ``httpx.Request``
    (docs/performance.md).
    """

    def __init__(
        self,
        count: int,
        *,
        timeout: httpx.Timeout = TIMEOUT,
        guard: GuardedResolver | None = None,
    ) -> None:
        self._count = count
        self._guard = guard
        self._tls = httpx.create_ssl_context()  # one context: loading the CA bundle is slow
        self._timeout = aiohttp.ClientTimeout(
            connect=timeout.pool, sock_connect=timeout.connect, sock_read=timeout.read
        )
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        """The session, made on first use (inside the running event loop)."""
        guarded: dict[str, Any] = {}
        if self._guard is not None:
            guarded = {
                "resolver": _AiohttpResolver(self._guard),
                "socket_factory": _GuardedSockets(self._guard),
            }
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._count, ssl=self._tls, **guarded),
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
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, _Refused):
                raise exc.os_error.refusal from None
            raise _httpx_error(exc) from exc
        except ValueError as exc:  # aiohttp.InvalidURL, or yarl refusing the URL
            raise httpx.InvalidURL(str(exc) or type(exc).__name__) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _httpx_error(exc) from exc
        return httpx.Response(answer.status, headers=answer.raw_headers, content=body)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _AiohttpResolver(AbstractResolver):
    """aiohttp's resolver for guarded connections: only the guard's checked addresses. (aiohttp
    skips its resolver for IP literals; :class:`_GuardedSockets` checks those.)"""

    def __init__(self, guard: GuardedResolver) -> None:
        self._guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in await self._guard.checked_addresses(host, port)
        ]

    async def close(self) -> None:
        return None


class _Refused(OSError):
    """An :class:`AddressRefused` where aiohttp expects an OSError (its socket factory)."""

    def __init__(self, refusal: AddressRefused) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


class _GuardedSockets:
    """aiohttp's socket factory for guarded connections: the address about to be connected to
    is checked before the socket exists (the peer check, made before any byte is sent)."""

    def __init__(self, guard: GuardedResolver) -> None:
        self._guard = guard

    def __call__(self, addr_info: tuple[Any, ...]) -> socket.socket:
        family, kind, proto, _, address = addr_info
        try:
            self._guard.check_peer(str(address[0]))
        except AddressRefused as refusal:
            raise _Refused(refusal) from None
        return socket.socket(family, kind, proto)


def _httpx_error(exc: Exception) -> httpx.TransportError:
    message = str(exc) or type(exc).__name__
    for theirs, ours in _ERRORS:
        if isinstance(exc, theirs):
            return ours(message)
    return httpx.TransportError(message)


class HttpxConnections:
    """``count`` single-connection httpx clients, each carrying one request at a time.

    httpx's connection pool re-examines every connection (a ``poll()`` each) on every request,
    so its cost per request grows with the pool until it outweighs the rest of the worker
    (docs/performance.md). Here each client's pool holds one connection and an
    idle queue hands clients out in O(1), which keeps many connections open (needed against a
    distant service) at the price of one.
    """

    def __init__(
        self,
        count: int,
        *,
        timeout: httpx.Timeout = TIMEOUT,
        guard: GuardedResolver | None = None,
    ) -> None:
        self._guard = guard
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
        target: httpx.URL | str = url
        extensions: dict[str, Any] = {}
        if self._guard is not None:
            target, headers, extensions = await self._checked(httpx.URL(url), headers)
        client = await self._idle.get()
        try:
            return await client.post(
                target, content=content, headers=headers, extensions=extensions
            )
        finally:
            self._idle.put_nowait(client)

    async def _checked(
        self, url: httpx.URL, headers: Mapping[str, str]
    ) -> tuple[httpx.URL, Mapping[str, str], dict[str, Any]]:
        """The request aimed at a checked address: httpx has no resolver to replace, so the URL
        carries the address, and the name stays in ``Host``, TLS SNI and the certificate check
        (httpx's ``sni_hostname`` extension). Nothing resolves the name again, and the peer is
        the literal address checked here."""
        assert self._guard is not None
        port = url.port or (443 if url.scheme == "https" else 80)
        address = await self._guard.checked_address(url.host, port)
        if address == url.host:
            return url, headers, {}
        named = {**headers, "Host": url.netloc.decode("ascii")}
        return url.copy_with(host=address), named, {"sni_hostname": url.host}

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


def open_connections(
    settings: Settings, count: int, *, guard: GuardedResolver | None = None
) -> Connections:
    """``count`` connections of the kind ``NUDGE_PUSH_HTTP_TRANSPORT`` names; with ``guard``,
    they connect only to addresses it checked."""
    name = settings.push_http_transport
    if name == "aiohttp":
        return AiohttpConnections(count, guard=guard)
    if name == "httpx":
        return HttpxConnections(count, guard=guard)
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
