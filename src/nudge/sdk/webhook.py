"""The app side of Nudge's (and Omi's) webhooks, done once: "Step 1" of the proactive guide.

``WebhookKit`` gives a FastAPI router (or a whole ASGI app) that

- verifies every call's Standard Webhooks signature (``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature`` with the app's ``whsec_`` secret; stale or future timestamps are refused),
- accumulates transcript segments per conversation in bounded memory (LRU, idle expiry, a cap
  per conversation) and hands the app only the segments it has not processed yet, with the earlier
  ones as context, so old text never triggers twice. As Omi's backend, the platform sends the uid
  as ``session_id`` and tells conversations apart by ``conversation_id``,
- answers a repeated ``webhook-id`` (a platform retry) with the first answer instead of processing
  the segments again,
- turns the app's ``Answer`` into the wire format: ``{"session_id", "notification": {"prompt",
  "params"}}``, ``{"session_id", "message"}`` or ``{"session_id"}`` (a notification or a message
  may add ``priority`` and ``ttl``).

Memory-creation calls (``POST {url}?uid=U`` with the finished conversation, in the shape of Omi's
``Conversation``) get the same checks; :class:`Conversation` parses every field of it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from standardwebhooks import Webhook
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from nudge.sdk import models
from nudge.sdk.errors import describe_validation
from nudge.sdk.models import SCOPES, check_priority, check_ttl

if TYPE_CHECKING:  # FastAPI is imported by router() and app() only: the rest runs without it
    from fastapi import APIRouter, FastAPI

log = logging.getLogger("nudge.sdk.webhook")

K = TypeVar("K")
V = TypeVar("V")
M = TypeVar("M", bound=BaseModel)

PROMPT_MIN_CHARS = 5
PROMPT_MAX_CHARS = 128_000
MESSAGE_MIN_CHARS = 6  # the platform ignores a "message" of 5 characters or fewer
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


# --- Answers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What the app answers to a webhook call; build it with ``proactive``, ``message`` or
    ``nothing``."""

    body: dict[str, Any]


def _sending(priority: str | None, ttl: int | None) -> dict[str, Any]:
    """An answer's optional ``priority`` (low | normal | high) and ``ttl`` (seconds)."""
    out: dict[str, Any] = {}
    if priority is not None:
        out["priority"] = check_priority(priority)
    if ttl is not None:
        out["ttl"] = check_ttl(ttl)
    return out


def proactive(
    prompt: str,
    params: Iterable[str] | None = None,
    *,
    priority: str | None = None,
    ttl: int | None = None,
) -> Answer:
    """Ask the platform for a proactive notification written from ``prompt``.

    ``params`` are the scopes the prompt uses; by default the ``{{ placeholders }}`` found in it.
    ``priority`` (low | normal | high) and ``ttl`` (seconds until it expires) are the
    notification's; the platform's defaults (normal, none) when not given.
    """
    if not PROMPT_MIN_CHARS <= len(prompt.strip()) <= PROMPT_MAX_CHARS:
        raise ValueError(f"prompt: must be {PROMPT_MIN_CHARS} to {PROMPT_MAX_CHARS} characters")
    names = list(dict.fromkeys(params if params is not None else _PLACEHOLDER.findall(prompt)))
    unknown = [n for n in names if n not in SCOPES]
    if unknown:
        raise ValueError(f"params: {unknown} are not scopes; use some of {list(SCOPES)}")
    note = {"prompt": prompt, "params": names, **_sending(priority, ttl)}
    return Answer({"notification": note})


def message(text: str, *, priority: str | None = None, ttl: int | None = None) -> Answer:
    """Ask the platform to send ``text`` to the user as a direct notification from the app
    (``priority`` and ``ttl`` as for :func:`proactive`)."""
    if len(text.strip()) < MESSAGE_MIN_CHARS:
        raise ValueError(f"message: must be at least {MESSAGE_MIN_CHARS} characters")
    return Answer({"message": text, **_sending(priority, ttl)})


def nothing() -> Answer:
    """Answer without asking for any notification."""
    return Answer({})


# --- What the platform sends ---------------------------------------------------------------


class Segment(BaseModel):
    """One transcript segment, as Omi sends it (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")
    text: str = Field(default="", max_length=20_000)
    speaker: str | None = None
    speaker_id: int | str | None = None
    is_user: bool = False
    start: float | None = None
    end: float | None = None


class TranscriptPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")
    session_id: str = Field(min_length=1, max_length=200)  # the uid, as Omi sends it
    conversation_id: str | None = Field(default=None, max_length=200)
    segments: list[Segment] = Field(default_factory=list, max_length=2_000)


class TranscriptSegment(Segment):
    """A segment of a finished conversation (Omi's ``TranscriptSegment``)."""

    id: str | None = None
    person_id: str | None = None
    translations: list[dict[str, Any]] | None = Field(default_factory=list)


class Structured(models.Structured):
    """Omi's ``Structured``: what the platform's LLM (or the client) wrote about it."""

    model_config = ConfigDict(extra="allow")
    title: str = ""
    overview: str = ""


class Geolocation(models.GeolocationItem):
    model_config = ConfigDict(extra="allow")


class Conversation(BaseModel):
    """The finished conversation a memory-creation webhook receives: Omi's ``Conversation``,
    every field with Omi's types (times as ISO 8601 strings, parsed to ``datetime``)."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1, max_length=200)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    source: str | None = "omi"
    language: str | None = None
    structured: Structured = Field(default_factory=Structured)
    transcript_segments: list[TranscriptSegment] = Field(default_factory=list, max_length=100_000)
    transcript_segments_compressed: bool | None = False
    geolocation: Geolocation | None = None
    photos: list[dict[str, Any]] = Field(default_factory=list)
    audio_files: list[dict[str, Any]] = Field(default_factory=list)
    apps_results: list[dict[str, Any]] = Field(default_factory=list)
    plugins_results: list[dict[str, Any]] = Field(default_factory=list)
    suggested_summarization_apps: list[str] = Field(default_factory=list)
    external_data: dict[str, Any] | None = None
    app_id: str | None = None
    discarded: bool = False
    deleted: bool = False
    visibility: str = "private"
    starred: bool = False
    status: str | None = "completed"
    is_locked: bool = False


def _normalize(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces: how phrases are compared."""
    return " ".join(re.sub(r"[^\w%']+", " ", text.lower()).split())


def _join(segments: Iterable[Segment]) -> str:
    return " ".join(s.text.strip() for s in segments if s.text.strip())


@dataclass(frozen=True)
class TranscriptEvent:
    """A realtime call, as the app sees it: the new segments and the earlier ones of the same
    conversation as context."""

    uid: str
    session_id: str  # the uid, as Omi's backend sends it
    segments: tuple[Segment, ...]  # not processed before
    context: tuple[Segment, ...]  # processed on earlier calls (most recent ones, bounded)
    conversation_id: str | None = None

    @property
    def text(self) -> str:
        """The new text only."""
        return _join(self.segments)

    @property
    def transcript(self) -> str:
        """The context and the new text."""
        return _join((*self.context, *self.segments))

    def matches(self, phrases: Iterable[str]) -> list[str]:
        """The phrases said in the new text, in the order given.

        Case and punctuation do not matter; a phrase must stand as whole words; a phrase that
        starts in the context and ends in the new text counts (it was split across calls), one
        that lies wholly in the context does not (it was handled before).
        """
        wanted = [(p, _normalize(p)) for p in phrases]
        longest = max((len(n) for _, n in wanted), default=0)
        tail = _normalize(_join(self.context))[-longest:] if self.context else ""
        new = _normalize(self.text)
        if not new:
            return []
        text = f" {tail} {new} " if tail else f" {new} "
        boundary = len(text) - len(new) - 1  # a match must end past this index
        found = []
        for phrase, norm in wanted:
            if not norm:
                continue
            start = text.find(f" {norm} ")
            while start != -1:
                if start + len(norm) + 1 > boundary:
                    found.append(phrase)
                    break
                start = text.find(f" {norm} ", start + 1)
        return found


@dataclass(frozen=True)
class MemoryEvent:
    uid: str
    conversation: Conversation

    @property
    def transcript(self) -> str:
        return _join(self.conversation.transcript_segments)


# --- Bounded memory ------------------------------------------------------------------------


class LRUCache(Generic[K, V]):
    """A dict with a size bound (least recently used goes first) and an idle expiry."""

    def __init__(
        self, max_items: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_items < 1 or ttl_s <= 0:
            raise ValueError("max_items must be at least 1 and ttl_s positive")
        self.max_items = max_items
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def _expire(self, now: float) -> None:
        while self._items:
            key, (seen, _) = next(iter(self._items.items()))
            if now - seen < self.ttl_s:
                break
            del self._items[key]

    def get(self, key: K) -> V | None:
        now = self._clock()
        self._expire(now)
        item = self._items.get(key)
        if item is None:
            return None
        self._items[key] = (now, item[1])
        self._items.move_to_end(key)
        return item[1]

    def put(self, key: K, value: V) -> None:
        now = self._clock()
        self._expire(now)
        self._items[key] = (now, value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        self._expire(self._clock())
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        self._expire(self._clock())
        return key in self._items

    def keys(self) -> Iterator[K]:
        self._expire(self._clock())
        return iter(list(self._items))


@dataclass
class _Session:
    max_segments: int
    pending: deque[Segment] = field(init=False)
    context: deque[Segment] = field(init=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.pending = deque(maxlen=self.max_segments)
        self.context = deque(maxlen=self.max_segments)

    def processed(self, count: int) -> None:
        """The first ``count`` pending segments were handled: they become context."""
        for _ in range(count):
            self.context.append(self.pending.popleft())


class SessionStore:
    """Segments per (uid, conversation) (``conversation_id``, or ``session_id`` from platforms
    that send none), bounded: at most ``max_sessions`` of them (the least recently active is
    dropped), each keeping at most ``max_segments`` unprocessed segments and as many processed
    ones as context; one idle for ``ttl_s`` is forgotten."""

    def __init__(
        self,
        *,
        max_sessions: int = 1_000,
        max_segments: int = 200,
        ttl_s: float = 3_600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_segments < 1:
            raise ValueError("max_segments must be at least 1")
        self.max_segments = max_segments
        self._sessions: LRUCache[tuple[str, str], _Session] = LRUCache(max_sessions, ttl_s, clock)

    def session(self, uid: str, session_id: str) -> _Session:
        key = (uid, session_id)
        found = self._sessions.get(key)
        if found is None:
            found = _Session(self.max_segments)
            self._sessions.put(key, found)
        return found

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, key: object) -> bool:
        return key in self._sessions


# --- Signatures ----------------------------------------------------------------------------


def signature_headers(
    secret: str, body: bytes | str, *, msg_id: str | None = None, timestamp: float | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for ``body``, as the platform sends them (for tests and tools)."""
    data = body.decode() if isinstance(body, bytes) else body
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, tz=UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, data),
    }


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail}, status_code=self.status)


# --- The kit -------------------------------------------------------------------------------

TranscriptHandler = Callable[[TranscriptEvent], "Answer | None | Awaitable[Answer | None]"]
MemoryHandler = Callable[[MemoryEvent], "Answer | None | Awaitable[Answer | None]"]


class WebhookKit:
    """Verified, accumulated, de-duplicated webhook calls for one app.

    ``on_transcript(event)`` is called with the segments not yet processed; when it returns, they
    count as processed. If it raises, the call answers 500 and the segments are handed over again
    (with the new ones) on the next call. Handlers may be plain or ``async`` functions.
    """

    def __init__(
        self,
        secret: str,
        *,
        on_transcript: TranscriptHandler | None = None,
        on_memory: MemoryHandler | None = None,
        sessions: SessionStore | None = None,
        max_body_bytes: int = 2 * 1024 * 1024,
        replay_cache_size: int = 4_096,
    ) -> None:
        if not secret.startswith("whsec_"):
            raise ValueError(
                "secret: use the app's webhook_secret (starts with 'whsec_'), shown at creation"
            )
        self._webhook = Webhook(secret)
        self.on_transcript = on_transcript
        self.on_memory = on_memory
        self.sessions = sessions if sessions is not None else SessionStore()
        self.max_body_bytes = max_body_bytes
        # webhook-id -> first answer (None while its handler has not succeeded).
        self._answers: LRUCache[str, dict[str, Any] | None] = LRUCache(
            replay_cache_size, ttl_s=3_600.0
        )

    async def _verified(self, request: Request) -> tuple[str, bytes]:
        declared = request.headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _Refused(413, f"body over {self.max_body_bytes} bytes")
        body = await request.body()
        if len(body) > self.max_body_bytes:
            raise _Refused(413, f"body over {self.max_body_bytes} bytes")
        try:
            self._webhook.verify(body, dict(request.headers), json_parse=False)
        except Exception as exc:  # the library raises several types for malformed headers
            raise _Refused(
                401,
                f"webhook signature rejected ({exc or type(exc).__name__}); check the whsec_ "
                "secret and that the call is fresh (5 minutes)",
            ) from None
        return request.headers["webhook-id"], body

    async def _accept(self, request: Request, model: type[M]) -> tuple[str, str, M]:
        """(webhook-id, uid, parsed body) of a verified call; ``_Refused`` otherwise."""
        msg_id, body = await self._verified(request)
        uid = request.query_params.get("uid", "").strip()
        if not uid:
            raise _Refused(422, "uid: required query parameter")
        try:
            return msg_id, uid, model.model_validate_json(body)
        except PydanticValidationError as exc:
            raise _Refused(422, describe_validation(list(exc.errors()))) from None

    @staticmethod
    async def _call(handler: Callable[[Any], Any], event: Any) -> Answer | None:
        # Plain functions run in a thread so they cannot block the loop; ``async`` ones (or
        # objects with an ``async def __call__``) run on it.
        method = type(handler).__call__
        if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(method):
            result = await handler(event)
        else:
            result = await run_in_threadpool(handler, event)
            if inspect.isawaitable(result):
                result = await result
        if result is not None and not isinstance(result, Answer):
            raise TypeError(f"handler returned {type(result).__name__}, not Answer or None")
        return result

    async def handle_transcript(self, request: Request) -> JSONResponse:
        """``POST {webhook_url}?session_id=S&uid=U`` with ``{"session_id", "conversation_id",
        "segments"}``."""
        if self.on_transcript is None:
            return _Refused(404, "this app takes no transcripts").response()
        try:
            msg_id, uid, payload = await self._accept(request, TranscriptPayload)
            query_session = request.query_params.get("session_id")
            if query_session is not None and query_session != payload.session_id:
                raise _Refused(422, "session_id: the query and the body disagree")
        except _Refused as refused:
            return refused.response()

        sid = payload.session_id
        session = self.sessions.session(uid, payload.conversation_id or sid)
        async with session.lock:
            replay = msg_id in self._answers
            first = self._answers.get(msg_id)
            if first is not None:
                return JSONResponse(first)
            if not replay:
                session.pending.extend(s for s in payload.segments if s.text.strip())
                self._answers.put(msg_id, None)
            if not session.pending:
                return JSONResponse({"session_id": sid})
            taken = len(session.pending)
            event = TranscriptEvent(
                uid,
                sid,
                tuple(session.pending),
                tuple(session.context),
                payload.conversation_id,
            )
            try:
                answer = await self._call(self.on_transcript, event)
            except Exception as exc:
                log.exception("transcript handler failed", extra={"uid": uid, "session_id": sid})
                return JSONResponse(
                    {
                        "detail": f"the app's handler failed ({type(exc).__name__}); its "
                        "segments are kept and handed over again on the next call"
                    },
                    status_code=500,
                )
            session.processed(taken)
            out = {"session_id": sid, **(answer.body if answer else {})}
            self._answers.put(msg_id, out)
        log.info(
            "transcript handled",
            extra={"uid": uid, "session_id": sid, "segments": taken, "answer": sorted(out)},
        )
        return JSONResponse(out)

    async def handle_memory(self, request: Request) -> JSONResponse:
        """``POST {webhook_url}?uid=U`` with the finished conversation."""
        if self.on_memory is None:
            return _Refused(404, "this app takes no memories").response()
        try:
            msg_id, uid, conversation = await self._accept(request, Conversation)
        except _Refused as refused:
            return refused.response()
        first = self._answers.get(msg_id)
        if first is not None:
            return JSONResponse(first)
        try:
            answer = await self._call(self.on_memory, MemoryEvent(uid, conversation))
        except Exception as exc:
            log.exception("memory handler failed", extra={"uid": uid, "id": conversation.id})
            return JSONResponse(
                {"detail": f"the app's handler failed ({type(exc).__name__})"}, status_code=500
            )
        out = answer.body if answer else {}
        self._answers.put(msg_id, out)
        return JSONResponse(out)

    def router(
        self, *, transcript_path: str = "/webhook", memory_path: str = "/memory"
    ) -> APIRouter:
        """The routes for the handlers given (transcripts at ``transcript_path``, memories at
        ``memory_path``), to include in an existing FastAPI app."""
        from fastapi import APIRouter

        router = APIRouter()
        if self.on_transcript is not None:
            router.add_api_route(transcript_path, self.handle_transcript, methods=["POST"])
        if self.on_memory is not None:
            router.add_api_route(memory_path, self.handle_memory, methods=["POST"])
        return router

    def app(self, *, title: str = "Nudge app", **paths: str) -> FastAPI:
        """A complete ASGI app: the router plus ``GET /healthz``."""
        from fastapi import FastAPI

        app = FastAPI(title=title)
        app.include_router(self.router(**paths))

        @app.get("/healthz")
        async def healthz() -> dict[str, Any]:
            return {"status": "ok", "sessions": len(self.sessions)}

        return app
