"""Clients for Nudge's app API: ``NudgeClient`` (sync) and ``AsyncNudgeClient`` (asyncio).

Both run the same *plan*: a generator that yields either a request to send or a number of seconds
to wait, and is sent back each request's outcome. Everything that matters (headers, the
idempotency key, which errors are retried and how long to wait, the total time budget, turning
answers into results or exceptions) lives in the plan, once; each client only does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from nudge import __version__
from nudge.delivery.backoff import parse_retry_after, retry_delay
from nudge.sdk.errors import APIError, NudgeError, TransportError, error_class

log = logging.getLogger("nudge.sdk")

T = TypeVar("T")
H = TypeVar("H", httpx.Client, httpx.AsyncClient)
Outcome = httpx.Response | httpx.TransportError
# A plan yields a request to send (and gets its outcome back) or seconds to wait (gets None back).
Plan = Generator[httpx.Request | float, Outcome | None, T]


@dataclass(frozen=True)
class RetryPolicy:
    """Retry 429, 5xx and connection errors with jittered exponential backoff.

    A ``Retry-After`` from the platform is a floor for the wait. The whole call, waits included,
    stays within ``total_timeout_s``: a wait that would pass it is not taken, the error is raised
    at once (its ``retry_after`` says when to try again). 401, 404 and 422 are never retried.
    """

    max_attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    total_timeout_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return retry_delay(
            attempt,
            base_s=self.base_delay_s,
            max_s=self.max_delay_s,
            retry_after=retry_after,
            rng=self.rng,
        )


@dataclass(frozen=True)
class RateLimitInfo:
    """The ``X-RateLimit-*`` headers of an answer (None where absent)."""

    limit: int | None
    remaining: int | None
    reset: int | None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimitInfo:
        def number(name: str) -> int | None:
            value = headers.get(name)
            return int(value) if value is not None and value.isdigit() else None

        return cls(
            number("X-RateLimit-Limit"),
            number("X-RateLimit-Remaining"),
            number("X-RateLimit-Reset"),
        )


@dataclass(frozen=True)
class SendResult:
    """An accepted notification. ``duplicate`` is true when the platform had it already (the same
    idempotency key, or the same message within its dedupe window) and returned the first one."""

    notification_id: str
    devices: int
    duplicate: bool
    idempotency_key: str
    attempts: int
    rate_limit: RateLimitInfo


@dataclass(frozen=True)
class DeliveryState:
    id: str
    provider: str
    device_id: str | None
    state: str  # queued, delivered, retrying, failed, token-removed
    attempts: int
    last_error: str
    next_attempt_at: float | None
    delivered_at: float | None


@dataclass(frozen=True)
class NotificationStatus:
    id: str
    app_id: str
    uid: str
    kind: str
    type: str
    title: str
    body: str
    data: dict[str, Any]
    created_at: float
    read: bool
    deliveries: list[DeliveryState]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> NotificationStatus:
        deliveries = [
            DeliveryState(
                id=d["id"],
                provider=d["provider"],
                device_id=d.get("device_id"),
                state=d["state"],
                attempts=int(d.get("attempts", 0)),
                last_error=d.get("last_error") or "",
                next_attempt_at=d.get("next_attempt_at"),
                delivered_at=d.get("delivered_at"),
            )
            for d in body.get("deliveries", [])
        ]
        return cls(
            id=body["id"],
            app_id=body["app_id"],
            uid=body.get("uid", ""),
            kind=body.get("kind", ""),
            type=body.get("type", ""),
            title=body.get("title", ""),
            body=body.get("body", ""),
            data=dict(body.get("data") or {}),
            created_at=float(body.get("created_at", 0.0)),
            read=bool(body.get("read", False)),
            deliveries=deliveries,
        )


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:500]


def _json(response: httpx.Response, needs: str) -> dict[str, Any]:
    """A success answer's JSON object; anything else means base_url is not a Nudge platform."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or needs not in body:
        raise NudgeError(
            f"unexpected answer from {response.request.url} (no {needs!r}); "
            "check that base_url points at a Nudge platform"
        )
    return body


def _error(outcome: Outcome, attempts: int) -> NudgeError:
    if isinstance(outcome, httpx.TransportError):
        name = type(outcome).__name__
        return TransportError(
            f"could not reach the platform ({name}: {outcome}); check base_url and that "
            "the platform is running",
            attempts=attempts,
        )
    return error_class(outcome.status_code)(
        _detail(outcome),
        status_code=outcome.status_code,
        headers=outcome.headers,
        attempts=attempts,
        retry_after=parse_retry_after(outcome.headers.get("Retry-After")),
    )


def _retryable(error: NudgeError) -> bool:
    if isinstance(error, APIError):
        return error.status_code == 429 or error.status_code >= 500
    return isinstance(error, TransportError)


@dataclass(frozen=True)
class _Done(Generic[T]):
    value: T


def _driven(plan: Plan[T]) -> Generator[httpx.Request | float | _Done[T], Outcome | None, None]:
    """The plan, with its result yielded as a last ``_Done`` step (keeps the drivers tiny)."""
    value = yield from plan
    yield _Done(value)


class _Plans(Generic[H]):
    """What both clients share: configuration, the HTTP client, and the plans of every call."""

    def __init__(
        self,
        base_url: str,
        app_id: str,
        app_secret: str,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float = 15.0,
        http: H | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, not {base_url!r}")
        if not app_id or not app_secret:
            raise ValueError("app_id and app_secret are required (both are shown at app creation)")
        self.base_url = base_url.rstrip("/")
        self.app_id = app_id
        self._secret = app_secret
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self._owns_http = http is None
        self._http: H = http if http is not None else self._new_http()

    def _new_http(self) -> H:
        raise NotImplementedError

    def __repr__(self) -> str:  # never print the secret
        return f"{type(self).__name__}(base_url={self.base_url!r}, app_id={self.app_id!r})"

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        idempotency_key: str | None = None,
    ) -> Plan[tuple[httpx.Response, int]]:
        """Send until success, a final error, or the end of the time budget."""
        headers = {
            "Authorization": f"Bearer {self._secret}",
            "User-Agent": f"nudge-sdk-python/{__version__}",
        }
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        deadline = time.monotonic() + self.retry.total_timeout_s
        attempt = 0
        while True:
            attempt += 1
            timeout = min(self.timeout_s, max(deadline - time.monotonic(), 0.1))
            outcome = yield httpx.Request(
                method,
                self.base_url + path,
                params=params,
                json=json,
                headers=headers,
                extensions={"timeout": httpx.Timeout(timeout).as_dict()},
            )
            assert outcome is not None
            if isinstance(outcome, httpx.Response) and outcome.is_success:
                return outcome, attempt
            error = _error(outcome, attempt)
            if not _retryable(error) or attempt >= self.retry.max_attempts:
                raise error
            retry_after = error.retry_after if isinstance(error, APIError) else None
            wait = self.retry.delay(attempt, retry_after)
            if time.monotonic() + wait > deadline:
                raise error
            log.info(
                "retrying",
                extra={
                    "path": path,
                    "attempt": attempt,
                    "wait_s": round(wait, 3),
                    "reason": error.message,
                    "idempotency_key": idempotency_key,
                },
            )
            yield wait

    def _sending(
        self, method: str, path: str, idempotency_key: str | None, **request: Any
    ) -> Plan[SendResult]:
        # One key per logical send, made before the first attempt and reused by every retry.
        key = idempotency_key or uuid.uuid4().hex
        response, attempts = yield from self._exchange(method, path, idempotency_key=key, **request)
        body = _json(response, "notification_id")
        return SendResult(
            notification_id=body["notification_id"],
            devices=int(body.get("devices", 0)),
            duplicate=bool(body.get("duplicate", False)),
            idempotency_key=key,
            attempts=attempts,
            rate_limit=RateLimitInfo.from_headers(response.headers),
        )

    def _send_notification(
        self, uid: str, message: str, idempotency_key: str | None
    ) -> Plan[SendResult]:
        return self._sending(
            "POST",
            f"/v2/integrations/{quote(self.app_id, safe='')}/notification",
            idempotency_key,
            params={"uid": uid, "message": message},
        )

    def _send(
        self,
        user_id: str,
        message: str,
        type: str,
        data: Mapping[str, str] | None,
        idempotency_key: str | None,
    ) -> Plan[SendResult]:
        body = {"user_id": user_id, "type": type, "message": message, "data": dict(data or {})}
        return self._sending("POST", "/api/notifications/send", idempotency_key, json=body)

    def _notification_status(self, notification_id: str) -> Plan[NotificationStatus]:
        app = quote(self.app_id, safe="")
        path = f"/v2/integrations/{app}/notifications/{quote(notification_id, safe='')}"
        response, _ = yield from self._exchange("GET", path)
        return NotificationStatus.from_json(_json(response, "deliveries"))


class NudgeClient(_Plans[httpx.Client]):
    """Blocking client. Use as a context manager, or call ``close()``.

    >>> with NudgeClient("http://localhost:8000", app_id, app_secret) as nudge:
    ...     nudge.send_notification("user123", "Your task is due in 1 hour!").notification_id
    """

    def _new_http(self) -> httpx.Client:
        return httpx.Client(follow_redirects=False)

    def _run(self, plan: Plan[T]) -> T:
        steps = _driven(plan)
        step = next(steps)
        while not isinstance(step, _Done):
            step = steps.send(self._perform(step))
        return step.value

    def _perform(self, step: httpx.Request | float) -> Outcome | None:
        if not isinstance(step, httpx.Request):
            time.sleep(step)
            return None
        try:
            return self._http.send(step)
        except httpx.TransportError as exc:
            return exc

    def send_notification(
        self, uid: str, message: str, *, idempotency_key: str | None = None
    ) -> SendResult:
        """``POST /v2/integrations/{app_id}/notification``: send ``message`` to user ``uid``."""
        return self._run(self._send_notification(uid, message, idempotency_key))

    def send(
        self,
        user_id: str,
        message: str,
        *,
        type: str = "",
        data: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> SendResult:
        """``POST /api/notifications/send``: a notification with a ``type`` and ``data``."""
        return self._run(self._send(user_id, message, type, data, idempotency_key))

    def notification_status(self, notification_id: str) -> NotificationStatus:
        """A notification this app sent and the state of each of its deliveries."""
        return self._run(self._notification_status(notification_id))

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> NudgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncNudgeClient(_Plans[httpx.AsyncClient]):
    """Asyncio client with the same calls and retry policy as ``NudgeClient``."""

    def _new_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(follow_redirects=False)

    async def _run(self, plan: Plan[T]) -> T:
        steps = _driven(plan)
        step = next(steps)
        while not isinstance(step, _Done):
            step = steps.send(await self._perform(step))
        return step.value

    async def _perform(self, step: httpx.Request | float) -> Outcome | None:
        if not isinstance(step, httpx.Request):
            await asyncio.sleep(step)
            return None
        try:
            return await self._http.send(step)
        except httpx.TransportError as exc:
            return exc

    async def send_notification(
        self, uid: str, message: str, *, idempotency_key: str | None = None
    ) -> SendResult:
        """``POST /v2/integrations/{app_id}/notification``: send ``message`` to user ``uid``."""
        return await self._run(self._send_notification(uid, message, idempotency_key))

    async def send(
        self,
        user_id: str,
        message: str,
        *,
        type: str = "",
        data: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> SendResult:
        """``POST /api/notifications/send``: a notification with a ``type`` and ``data``."""
        return await self._run(self._send(user_id, message, type, data, idempotency_key))

    async def notification_status(self, notification_id: str) -> NotificationStatus:
        """A notification this app sent and the state of each of its deliveries."""
        return await self._run(self._notification_status(notification_id))

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncNudgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
