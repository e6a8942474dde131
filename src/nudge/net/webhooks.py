"""Calls from Nudge to apps (contract.md §2): signed, SSRF-safe, bounded, one breaker per app.

Signed per Standard Webhooks; each address vetted by :mod:`nudge.net.guard`; sent over
:mod:`nudge.net.http1`. Each app has its own lane (``NUDGE_WEBHOOK_CONCURRENCY_PER_APP`` calls at
once, a bounded queue behind them) and its own circuit breaker, so a slow or failing app never
holds up another (docs/proactive.md, "How calls are made")."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook

from nudge import __version__
from nudge.config import Settings
from nudge.ids import new_id
from nudge.net.guard import AddressRefused, GuardedResolver
from nudge.net.http1 import HTTP1Client, HTTPError

log = logging.getLogger("nudge.webhooks")


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
    """An app's calls: at most N at once (so it holds at most N connections); the rest wait in
    order, up to a bound."""

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


def sign(signer: Webhook, message_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The Standard Webhooks headers for one message."""
    signature = signer.sign(message_id, datetime.fromtimestamp(timestamp, tz=UTC), body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


class WebhookClient:
    """Webhook calls through :class:`HTTP1Client`, with :class:`GuardedResolver` choosing and
    vetting the address of every connection. One client for every app: connections are pooled
    per origin, and each app's lane bounds how many it holds."""

    def __init__(self, settings: Settings, *, resolver: GuardedResolver | None = None) -> None:
        self.settings = settings
        self.resolver = resolver or GuardedResolver(settings.allow_private_webhooks)
        self.http = HTTP1Client(
            address_for=self.resolver.checked_address,
            check_peer=self.resolver.check_peer,
            connect_timeout_s=settings.webhook_connect_timeout_s,
            user_agent=f"Nudge-Webhooks/{__version__}",
        )
        self.breakers: dict[str, CircuitBreaker] = {}
        self._signers: dict[str, Webhook] = {}  # secret -> signer (decoding a secret costs)
        self._lanes: dict[str, Lane] = {}

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
        self, target: WebhookTarget, method: str, url: str, params: Mapping[str, str], payload: Any
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
        try:
            answer = await self.http.request(
                method,
                url,
                params=params,
                headers=headers,
                body=body.encode(),
                limit=self.settings.webhook_max_answer_bytes,
                timeout_s=self.settings.webhook_timeout_s,
            )
            result.status, result.address = answer.status, answer.peer
            result.body, result.error = answer.body, answer.error
            if result.error is None:
                if 200 <= answer.status < 300:
                    result.ok = True
                elif answer.status in (301, 302, 303, 307, 308):
                    result.error = (
                        f"redirect ({answer.status} to "
                        f"{answer.headers.get('location', '?')!r}) refused: "
                        "webhooks are not followed; use the final URL in the manifest"
                    )
                else:
                    result.error = f"answered HTTP {answer.status}"
        except AddressRefused as exc:
            result.error = f"refused: {exc}"
        except TimeoutError:
            result.error = f"no complete answer within {self.settings.webhook_timeout_s:g} s"
        except HTTPError as exc:
            result.error = str(exc)
        result.seconds = time.monotonic() - started
        return result

    async def aclose(self) -> None:
        await self.http.aclose()
