"""Clients for Nudge's app API: ``NudgeClient`` (sync) and ``AsyncNudgeClient`` (asyncio).

Both run the same *plan*: a generator that yields either a request to send or a number of seconds
to wait, and is sent back each request's outcome. Everything that matters (headers, the
idempotency key, which errors are retried and how long to wait, the total time budget, turning
answers into results or exceptions) lives in the plan, once; each client only does the I/O.
Every call of the API is written once, as a plan method marked ``@_call``, which makes it a
blocking method on ``NudgeClient`` and a coroutine method on ``AsyncNudgeClient``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload
from urllib.parse import quote

import httpx

from nudge import __version__
from nudge.sdk.backoff import parse_retry_after, retry_delay
from nudge.sdk.errors import APIError, NudgeError, TransportError, error_class
from nudge.sdk.models import ConversationItem as Conversation
from nudge.sdk.models import MemoryItem as Memory
from nudge.sdk.models import (
    Notification,
    NotificationStatus,
    Preferences,
    ReadAllResult,
    UnreadCount,
    check_priority,
    check_ttl,
)
from nudge.sdk.models import SearchConversationsResponse as ConversationPage

log = logging.getLogger("nudge.sdk")

T = TypeVar("T")
H = TypeVar("H", httpx.Client, httpx.AsyncClient)
C = TypeVar("C", bound="_Plans[Any]")
P = ParamSpec("P")
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


def _when(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def _options(
    priority: str | None, ttl: int | None, send_at: datetime | str | None
) -> dict[str, Any]:
    """The optional sending fields that were given, checked as the platform checks them (a
    naive ``send_at`` has no offset: the platform refuses it)."""
    options: dict[str, Any] = {}
    if priority is not None:
        options["priority"] = check_priority(priority)
    if ttl is not None:
        options["ttl"] = check_ttl(ttl)
    if send_at is not None:
        options["send_at"] = _when(send_at)
    return options


def error_detail(response: httpx.Response) -> str:
    """What an error answer says: its ``{"detail"}``, else its body (bounded)."""
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
        error_detail(outcome),
        status_code=outcome.status_code,
        headers=outcome.headers,
        attempts=attempts,
        retry_after=parse_retry_after(outcome.headers.get("Retry-After")),
    )


def _retryable(error: NudgeError, outcome: Outcome, idempotent: bool) -> bool:
    """429, 5xx and connection errors; for a call that is not idempotent (an import) only what
    surely did nothing: a 429, or a connection that never opened."""
    if not idempotent:
        return isinstance(outcome, httpx.ConnectError) or (
            isinstance(outcome, httpx.Response) and outcome.status_code == 429
        )
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


class _call(Generic[C, P, T]):  # noqa: N801 (used as a decorator)
    """A call of the API written once, as a plan: on ``NudgeClient`` a blocking method, on
    ``AsyncNudgeClient`` a coroutine method, with the plan's signature and docstring."""

    def __init__(self, plan: Callable[Concatenate[C, P], Plan[T]]) -> None:
        self.plan = plan
        self.__doc__ = plan.__doc__
        signature = inspect.signature(plan)  # as the client's method: no ``self``, no plan
        self.signature = signature.replace(
            parameters=list(signature.parameters.values())[1:],
            return_annotation=inspect.Signature.empty,
        )

    @overload
    def __get__(self, client: NudgeClient, owner: type | None = None) -> Callable[P, T]: ...

    @overload
    def __get__(
        self, client: AsyncNudgeClient, owner: type | None = None
    ) -> Callable[P, Awaitable[T]]: ...

    def __get__(self, client: Any, owner: type | None = None) -> Any:
        if client is None:
            return self

        @functools.wraps(self.plan)
        def call(*args: P.args, **kwargs: P.kwargs) -> Any:
            return client._run(self.plan(client, *args, **kwargs))

        call.__signature__ = self.signature  # type: ignore[attr-defined]
        return call


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
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotency_key: str | None = None,
        idempotent: bool = True,
        bearer: str | None = None,
    ) -> Plan[tuple[httpx.Response, int]]:
        """Send until success, a final error, or the end of the time budget. ``bearer``: the
        credential to send instead of the app secret (a user token, for the user's calls)."""
        headers = {
            "Authorization": f"Bearer {bearer or self._secret}",
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
            if not _retryable(error, outcome, idempotent) or attempt >= self.retry.max_attempts:
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

    def _integration(self, path: str) -> str:
        return f"/v2/integrations/{quote(self.app_id, safe='')}/{path}"

    @_call
    def send_notification(
        self,
        uid: str,
        message: str,
        *,
        idempotency_key: str | None = None,
        priority: str | None = None,
        ttl: int | None = None,
        send_at: datetime | str | None = None,
    ) -> Plan[SendResult]:
        """``POST /v2/integrations/{app_id}/notification``: send ``message`` to user ``uid``.

        ``priority`` low | normal | high; ``ttl`` seconds until it expires (from when it is
        due); ``send_at`` when to send it (an aware datetime or ISO 8601 with its offset)."""
        params = {"uid": uid, "message": message}
        params.update(_options(priority, ttl, send_at))
        return self._sending(
            "POST", self._integration("notification"), idempotency_key, params=params
        )

    @_call
    def send(
        self,
        user_id: str,
        message: str,
        *,
        type: str = "",
        data: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        priority: str | None = None,
        ttl: int | None = None,
        send_at: datetime | str | None = None,
    ) -> Plan[SendResult]:
        """``POST /api/notifications/send``: a notification with a ``type`` and ``data``
        (``priority``, ``ttl`` and ``send_at`` as for :meth:`send_notification`)."""
        body: dict[str, Any] = {
            "user_id": user_id,
            "type": type,
            "message": message,
            "data": dict(data or {}),
        }
        body.update(_options(priority, ttl, send_at))
        return self._sending("POST", "/api/notifications/send", idempotency_key, json=body)

    @_call
    def notification_status(self, notification_id: str) -> Plan[NotificationStatus]:
        """A notification this app sent and the state of each of its deliveries."""
        path = self._integration(f"notifications/{quote(notification_id, safe='')}")
        response, _ = yield from self._exchange("GET", path)
        return NotificationStatus.model_validate(_json(response, "deliveries"))

    @_call
    def cancel_notification(self, notification_id: str) -> Plan[NotificationStatus]:
        """Cancel what of a notification this app sent has not gone yet (a scheduled or held
        one: all of it); its status after. A ``ConflictError`` (409) when nothing was left to
        cancel (it had gone)."""
        path = self._integration(f"notifications/{quote(notification_id, safe='')}")
        response, _ = yield from self._exchange("DELETE", path)
        return NotificationStatus.model_validate(_json(response, "deliveries"))

    # --- Omi's integration API ----------------------------------------------------------------

    @_call
    def create_conversation(
        self,
        uid: str,
        text: str | None = None,
        *,
        transcript_segments: Sequence[Mapping[str, Any]] | None = None,
        started_at: datetime | str | None = None,
        finished_at: datetime | str | None = None,
        language: str | None = None,
        geolocation: Mapping[str, Any] | None = None,
        text_source: str = "audio_transcript",
        text_source_spec: str | None = None,
    ) -> Plan[Conversation]:
        """Import a finished conversation for ``uid`` (``text`` or ``transcript_segments``);
        needs the ``create_conversation`` action. Retried only on 429 (it is not idempotent)."""
        body = {
            "text": text,
            "transcript_segments": None
            if transcript_segments is None
            else list(transcript_segments),
            "started_at": _when(started_at),
            "finished_at": _when(finished_at),
            "language": language,
            "geolocation": None if geolocation is None else dict(geolocation),
            "text_source": text_source,
            "text_source_spec": text_source_spec,
        }
        response, _ = yield from self._exchange(
            "POST",
            self._integration("user/conversations"),
            params={"uid": uid},
            json={k: v for k, v in body.items() if v is not None},
            idempotent=False,
        )
        return Conversation.model_validate(_json(response, "conversation")["conversation"])

    @_call
    def create_memories(
        self,
        uid: str,
        *,
        text: str | None = None,
        memories: Sequence[str | Mapping[str, Any]] | None = None,
        text_source: str = "other",
        text_source_spec: str | None = None,
    ) -> Plan[list[Memory]]:
        """Import memories for ``uid``: explicit ones (text, or ``{"content", "tags"}``) and
        those found in ``text``; returns those stored. Needs ``create_memories``."""
        body: dict[str, Any] = {"text_source": text_source}
        if text is not None:
            body["text"] = text
        if text_source_spec is not None:
            body["text_source_spec"] = text_source_spec
        if memories is not None:
            body["memories"] = [{"content": m} if isinstance(m, str) else dict(m) for m in memories]
        response, _ = yield from self._exchange(
            "POST",
            self._integration("user/memories"),
            params={"uid": uid},
            json=body,
            idempotent=False,
        )
        return [Memory.model_validate(m) for m in _json(response, "memories")["memories"]]

    @_call
    def list_memories(self, uid: str, *, limit: int = 100, offset: int = 0) -> Plan[list[Memory]]:
        """The user's memories, newest first. Needs ``read_memories``."""
        params = {"uid": uid, "limit": limit, "offset": offset}
        response, _ = yield from self._exchange("GET", self._integration("memories"), params=params)
        return [Memory.model_validate(m) for m in _json(response, "memories")["memories"]]

    @_call
    def list_conversations(
        self,
        uid: str,
        *,
        limit: int = 100,
        offset: int = 0,
        include_discarded: bool = False,
        statuses: Sequence[str] | None = None,
        start_date: datetime | str | None = None,
        end_date: datetime | str | None = None,
        max_transcript_segments: int = 100,
    ) -> Plan[list[Conversation]]:
        """The user's conversations, newest first. Needs ``read_conversations``."""
        params = {
            "uid": uid,
            "limit": limit,
            "offset": offset,
            "include_discarded": str(include_discarded).lower(),
            "statuses": list(statuses or []),
            "start_date": _when(start_date),
            "end_date": _when(end_date),
            "max_transcript_segments": max_transcript_segments,
        }
        response, _ = yield from self._exchange(
            "GET",
            self._integration("conversations"),
            params={k: v for k, v in params.items() if v is not None},
        )
        found = _json(response, "conversations")["conversations"]
        return [Conversation.model_validate(c) for c in found]

    @_call
    def search_conversations(
        self,
        uid: str,
        query: str,
        *,
        page: int = 1,
        per_page: int = 10,
        include_discarded: bool = True,
        start_date: datetime | str | None = None,
        end_date: datetime | str | None = None,
        max_transcript_segments: int = 100,
    ) -> Plan[ConversationPage]:
        """Full-text search of the user's conversations. Needs ``read_conversations``."""
        body = {
            "query": query,
            "page": page,
            "per_page": per_page,
            "include_discarded": include_discarded,
            "start_date": _when(start_date),
            "end_date": _when(end_date),
        }
        response, _ = yield from self._exchange(
            "POST",
            self._integration("search/conversations"),
            params={"uid": uid, "max_transcript_segments": max_transcript_segments},
            json={k: v for k, v in body.items() if v is not None},
        )
        return ConversationPage.model_validate(_json(response, "conversations"))

    # --- The user's inbox: calls made with the user's token (or the admin token) ---------------

    def _inbox(self, uid: str, path: str = "") -> str:
        return f"/v1/users/{quote(uid, safe='')}/notifications{path}"

    @_call
    def mark_notification(
        self,
        uid: str,
        notification_id: str,
        *,
        user_token: str,
        read: bool | None = None,
        seen: bool | None = None,
        archived: bool | None = None,
    ) -> Plan[Notification]:
        """Set (True) or clear (False) the flags given on one of the user's notifications; the
        notification after. At least one flag."""
        flags = {"read": read, "seen": seen, "archived": archived}
        body = {name: on for name, on in flags.items() if on is not None}
        if not body:
            raise ValueError("give at least one of read, seen, archived")
        path = self._inbox(uid, f"/{quote(notification_id, safe='')}")
        response, _ = yield from self._exchange("PATCH", path, json=body, bearer=user_token)
        return Notification.model_validate(_json(response, "id"))

    @_call
    def read_all(
        self, uid: str, *, user_token: str, up_to: str | None = None
    ) -> Plan[ReadAllResult]:
        """Mark the user's unread notifications read (only ids up to ``up_to``, if given)."""
        body = {} if up_to is None else {"up_to": up_to}
        path = self._inbox(uid, "/read-all")
        response, _ = yield from self._exchange("POST", path, json=body, bearer=user_token)
        return ReadAllResult.model_validate(_json(response, "changed"))

    @_call
    def unread_count(self, uid: str, *, user_token: str) -> Plan[int]:
        """How many of the user's notifications are neither read nor archived."""
        path = self._inbox(uid, "/unread-count")
        response, _ = yield from self._exchange("GET", path, bearer=user_token)
        return UnreadCount.model_validate(_json(response, "unread")).unread

    # --- The user's preferences (DESIGN §10), with the user's token (or the admin token) -----

    def _preferences(self, uid: str) -> str:
        return f"/v1/users/{quote(uid, safe='')}/preferences"

    @_call
    def get_preferences(self, uid: str, *, user_token: str) -> Plan[Preferences]:
        """The user's preferences and each installed app's, defaults filled in."""
        path = self._preferences(uid)
        response, _ = yield from self._exchange("GET", path, bearer=user_token)
        return Preferences.model_validate(_json(response, "apps"))

    @_call
    def set_preferences(
        self, uid: str, preferences: Preferences | Mapping[str, Any], *, user_token: str
    ) -> Plan[Preferences]:
        """Replace the user's whole document (keys left out: their defaults; only installed
        apps); the document as stored."""
        body = Preferences.model_validate(preferences).model_dump(mode="json")
        path = self._preferences(uid)
        response, _ = yield from self._exchange("PUT", path, json=body, bearer=user_token)
        return Preferences.model_validate(_json(response, "apps"))


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

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncNudgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
