"""What the push providers share about HTTP: a cheap many-connection client, and the reading of
answers that a provider's own error table does not name."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from nudge.delivery.backoff import parse_retry_after
from nudge.delivery.providers.base import Outcome, SendResult


class ConnectionLanes:
    """``count`` single-connection httpx clients, each carrying one request at a time.

    httpx's connection pool re-examines every connection (a ``poll()`` each) on every request,
    so its cost per request grows with the pool: at 128 connections it spent more CPU than
    everything else in the worker together. Here each client's pool holds one connection and an
    idle queue hands clients out in O(1), which keeps many connections open (needed against a
    distant service) at the price of one.
    """

    def __init__(self, count: int, *, http2: bool, timeout: httpx.Timeout) -> None:
        tls = httpx.create_ssl_context()  # one context: loading the CA bundle is slow
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self._clients = [
            httpx.AsyncClient(http2=http2, timeout=timeout, limits=limits, verify=tls)
            for _ in range(count)
        ]
        self._idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for client in self._clients:
            self._idle.put_nowait(client)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        client = await self._idle.get()
        try:
            return await client.post(url, **kwargs)
        finally:
            self._idle.put_nowait(client)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


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
