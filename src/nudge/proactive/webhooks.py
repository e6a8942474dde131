"""Calls from Nudge to apps (DESIGN section 2): signed, SSRF-safe, bounded, one breaker per app.

- Signed per Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``
  (``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body`` under the app's ``whsec_`` secret).
- SSRF: the host is resolved once, at connect time, inside the HTTP stack's network backend; every
  address it resolves to is checked and the connection goes to a checked address. URL, ``Host``,
  TLS SNI and certificate checks keep the real host name, and nothing resolves it a second time,
  so there is no DNS-rebinding window. Private, loopback, link-local and other non-global targets
  are refused unless ``NUDGE_ALLOW_PRIVATE_WEBHOOKS=1``.
- Connect timeout 2 s, total 15 s (configurable), no redirects, every 2xx is success, answers
  capped in size, and a circuit breaker per app: after N consecutive failures its calls are
  skipped for a cool-down, then one trial call decides. Each app has its own lane (at most
  ``NUDGE_WEBHOOK_CONCURRENCY_PER_APP`` calls at once, a bounded queue behind them) and each
  origin its own connection pool, so a slow app never holds up another one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpcore
import httpx
from standardwebhooks import Webhook

from nudge import __version__
from nudge.config import Settings
from nudge.ids import new_id

log = logging.getLogger("nudge.webhooks")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookRefused(Exception):
    """The target is not allowed (private address, unresolvable host); the message says why."""


def address_refusal(ip: IPAddress, allow_private: bool) -> str | None:
    """Why connecting to ``ip`` is refused, or None when it is allowed."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_multicast:
        return f"{ip} is not a unicast address"
    if allow_private or ip.is_global:
        return None
    kind = (
        "loopback"
        if ip.is_loopback
        else "link-local"
        if ip.is_link_local
        else "private"
        if ip.is_private
        else "non-public"
    )
    return (
        f"{ip} is a {kind} address; webhooks must reach public hosts "
        "(set NUDGE_ALLOW_PRIVATE_WEBHOOKS=1 to allow private targets in development)"
    )


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that resolves, checks and connects to the checked address."""

    def __init__(
        self,
        allow_private: bool,
        *,
        cache_ttl_s: float = 30.0,
        resolve: Callable[[str, int], Awaitable[list[str]]] | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.cache_ttl_s = cache_ttl_s
        self.resolve = resolve or system_resolve
        self._inner = httpcore.AnyIOBackend()
        self._cache: dict[tuple[str, int], tuple[float, str]] = {}

    async def checked_address(self, host: str, port: int) -> str:
        """The address to connect to for ``host``; raises :class:`WebhookRefused`."""
        now = time.monotonic()
        cached = self._cache.get((host, port))
        if cached and cached[0] > now:
            return cached[1]
        try:
            addresses: list[IPAddress] = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                found = await self.resolve(host, port)
            except OSError as exc:
                raise WebhookRefused(f"cannot resolve {host}: {exc.strerror or exc}") from None
            addresses = list(dict.fromkeys(ipaddress.ip_address(a) for a in found))
        if not addresses:
            raise WebhookRefused(f"{host} resolves to no address")
        # Every address must pass: a name that mixes public and private answers is refused.
        for ip in addresses:
            reason = address_refusal(ip, self.allow_private)
            if reason:
                raise WebhookRefused(f"{host} refused: {reason}")
        chosen = str(addresses[0])
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[(host, port)] = (now + self.cache_ttl_s, chosen)
        return chosen

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await self.checked_address(host, port)
        return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise WebhookRefused("unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool built on :class:`GuardedBackend`."""

    def __init__(self, backend: GuardedBackend, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        # Same pool httpx builds, plus our network backend (httpx has no parameter for it).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


@dataclass
class CircuitBreaker:
    """Closed: calls go through. Open after ``threshold`` consecutive failures: calls are skipped
    for ``cooldown_s``; then a single trial call closes it again or reopens it."""

    threshold: int
    cooldown_s: float
    failures: int = 0
    opened_at: float | None = None
    trial_running: bool = False
    skips: int = 0  # calls skipped since the circuit opened

    def allow(self, now: float) -> bool:
        if self.opened_at is None:
            return True
        if now - self.opened_at >= self.cooldown_s and not self.trial_running:
            self.trial_running = True
            return True
        self.skips += 1
        return False

    def record(self, ok: bool, now: float) -> None:
        self.trial_running = False
        if ok:
            self.failures, self.opened_at, self.skips = 0, None, 0
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = now

    def retry_in(self, now: float) -> float:
        return 0.0 if self.opened_at is None else max(self.cooldown_s - (now - self.opened_at), 0)


@dataclass
class Lane:
    """An app's calls: at most N at once (its pool stays small and cheap to scan); the rest
    wait in order, up to a bound."""

    slots: asyncio.Semaphore
    waiting: int = 0


@dataclass(frozen=True)
class WebhookTarget:
    app_id: str
    secret: str  # the app's whsec_ signing secret


@dataclass
class WebhookResult:
    ok: bool  # a 2xx answer arrived
    status: int | None = None
    body: bytes = b""
    error: str | None = None
    seconds: float = 0.0
    address: str | None = None  # the peer actually connected to
    skipped: bool = False  # circuit open: no call was made
    first_skip: bool = False  # the first call skipped since the circuit opened
    message_id: str = ""
    started_at: float = field(default_factory=time.time)

    def summary(self, max_body: int = 4000) -> dict[str, Any]:
        """For traces: what came back, bounded."""
        text = self.body[:max_body].decode("utf-8", errors="replace")
        return {
            "ok": self.ok,
            "status": self.status,
            "error": self.error,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 4),
            "address": self.address,
            "webhook_id": self.message_id,
            "body": text,
            "body_bytes": len(self.body),
            "body_truncated": len(self.body) > max_body,
        }


async def _read_bounded(response: httpx.Response, limit: int) -> tuple[bytes, str | None]:
    """The answer's body, at most ``limit`` bytes (and an error when it was longer)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) <= limit:
        return await response.aread(), None  # one read, the common case
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            return b"".join(chunks), f"answer over {limit} bytes; cut off"
        chunks.append(chunk)
    return b"".join(chunks), None


def sign(signer: Webhook, message_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The Standard Webhooks headers for one message."""
    signature = signer.sign(message_id, datetime.fromtimestamp(timestamp, tz=UTC), body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


class WebhookClient:
    def __init__(self, settings: Settings, *, backend: GuardedBackend | None = None) -> None:
        self.settings = settings
        self.backend = backend or GuardedBackend(settings.allow_private_webhooks)
        # One connection pool per origin: a request scans only its own origin's connections,
        # and a slow app's connections never crowd out another app's.
        self._clients: dict[tuple[bytes, bytes, int | None], httpx.AsyncClient] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self._signers: dict[str, Webhook] = {}  # secret -> signer (decoding a secret costs)
        self._lanes: dict[str, Lane] = {}

    def client_for(self, url: httpx.URL) -> httpx.AsyncClient:
        origin = (url.raw_scheme, url.raw_host, url.port)
        client = self._clients.get(origin)
        if client is None:
            per_app = self.settings.webhook_concurrency_per_app
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=per_app)
            client = self._clients[origin] = httpx.AsyncClient(
                transport=GuardedTransport(self.backend, limits),
                timeout=httpx.Timeout(
                    self.settings.webhook_timeout_s,
                    connect=self.settings.webhook_connect_timeout_s,
                ),
                follow_redirects=False,
                headers={"user-agent": f"Nudge-Webhooks/{__version__}"},
            )
        return client

    def breaker(self, app_id: str) -> CircuitBreaker:
        found = self.breakers.get(app_id)
        if found is None:
            found = self.breakers[app_id] = CircuitBreaker(
                self.settings.webhook_breaker_failures, self.settings.webhook_breaker_cooldown_s
            )
        return found

    async def send(
        self,
        target: WebhookTarget,
        method: str,
        url: str,
        *,
        params: Mapping[str, str],
        payload: Any = None,
    ) -> WebhookResult:
        """Make one signed call; never raises for anything the app or the network does."""
        breaker = self.breaker(target.app_id)
        now = time.monotonic()
        if not breaker.allow(now):
            return WebhookResult(
                ok=False,
                skipped=True,
                first_skip=breaker.skips == 1,
                error=(
                    f"circuit open after {breaker.failures} consecutive failures; "
                    f"next trial call in {breaker.retry_in(now):.0f} s"
                ),
            )
        lane = self._lanes.get(target.app_id)
        if lane is None:
            lane = self._lanes[target.app_id] = Lane(
                asyncio.Semaphore(self.settings.webhook_concurrency_per_app)
            )
        if lane.waiting >= self.settings.webhook_max_waiting_per_app:
            return WebhookResult(
                ok=False,
                error=f"dropped: {lane.waiting} calls to this app are already waiting "
                "(it answers too slowly for the traffic it gets)",
            )
        lane.waiting += 1
        try:
            await lane.slots.acquire()
        finally:
            lane.waiting -= 1
        try:
            result = await self._call(target, method, url, params, payload)
        finally:
            lane.slots.release()
        breaker.record(result.ok, time.monotonic())
        return result

    async def _call(
        self,
        target: WebhookTarget,
        method: str,
        url: str,
        params: Mapping[str, str],
        payload: Any,
    ) -> WebhookResult:
        body = "" if payload is None else json.dumps(payload, separators=(",", ":"))
        message_id = new_id("msg")
        signer = self._signers.get(target.secret)
        if signer is None:
            if len(self._signers) > 10_000:
                self._signers.clear()
            signer = self._signers[target.secret] = Webhook(target.secret)
        headers = sign(signer, message_id, int(time.time()), body)
        if payload is not None:
            headers["content-type"] = "application/json"
        result = WebhookResult(ok=False, message_id=message_id)
        started = time.monotonic()
        limit = self.settings.webhook_max_answer_bytes
        try:
            async with asyncio.timeout(self.settings.webhook_timeout_s):
                target_url = httpx.URL(url)
                http = self.client_for(target_url)
                request = http.build_request(
                    method, target_url, params=params, content=body.encode(), headers=headers
                )
                response = await http.send(request, stream=True)
                try:
                    result.status = response.status_code
                    stream = response.extensions.get("network_stream")
                    peer = stream.get_extra_info("server_addr") if stream else None
                    result.address = f"{peer[0]}:{peer[1]}" if peer else None
                    result.body, result.error = await _read_bounded(response, limit)
                finally:
                    await response.aclose()
            if result.error is None:
                if response.is_success:
                    result.ok = True
                elif response.is_redirect:
                    result.error = (
                        f"redirect ({response.status_code} to "
                        f"{response.headers.get('location', '?')!r}) refused: "
                        "webhooks are not followed; use the final URL in the manifest"
                    )
                else:
                    result.error = f"answered HTTP {response.status_code}"
        except WebhookRefused as exc:
            result.error = f"refused: {exc}"
        except TimeoutError:
            result.error = f"no complete answer within {self.settings.webhook_timeout_s:g} s"
        except httpx.TimeoutException as exc:
            result.error = f"timed out ({type(exc).__name__})"
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            result.error = f"{type(exc).__name__}: {str(exc)[:300] or 'connection failed'}"
        result.seconds = time.monotonic() - started
        return result

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
