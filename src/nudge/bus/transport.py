"""Live events between processes (contract.md §8): the inbox stream and the worker wake-up.

Each process keeps a :class:`LocalEventBus` for its own SSE clients; a transport carries events
and wake-ups between processes: Redis (one channel per user, subscribed only while that user has
a client here) or else PostgreSQL LISTEN/NOTIFY (one inbox channel; an event over NOTIFY's
payload limit travels in parts). Sends are batched and channels listened to lazily. The stream is
best effort: while the transport is down, events reach this process's clients only and workers
poll; the inbox stays the record (docs/deploy.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from sqlalchemy.engine import make_url

from nudge.bus.local import EventBus, LocalEventBus
from nudge.config import Settings
from nudge.text import json_text

log = logging.getLogger("nudge.bus")

Event = dict[str, Any]
FAILURE_LOG_INTERVAL_S = 30.0  # one warning per transport outage and half minute
CONFIRM_TIMEOUT_S = 5.0  # how long a new subscriber waits for the transport to confirm
RETRY_S = 2.0  # while the transport is down, how often publishing tries it again
WAKE_GAP_S = 0.02  # wake-ups leaving one process: at most one per this long


class TransportBus(ABC):
    """What both transports share: local fan-out, counting local subscribers, batched sends."""

    transport: ClassVar[str]

    def __init__(self) -> None:
        self.local = LocalEventBus()
        self._users: Counter[str] = Counter()  # uid -> live subscribers in this process
        self._batch: list[tuple[str, Event]] = []
        self._batch_wake = False
        self._last_wake = 0.0
        self._wake_timer: asyncio.TimerHandle | None = None
        self._batch_sent: asyncio.Future[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._work_listening = False
        self._failing_since: float | None = None
        self._last_failure = 0.0
        self._last_warning = 0.0

    # -- the transport ---------------------------------------------------------------------
    @abstractmethod
    async def _send(self, events: list[tuple[str, Event]], wake: bool) -> None:
        """Send the events (and a wake-up) to every process, in one round trip if possible."""

    @abstractmethod
    async def _listen_user(self, uid: str) -> None:
        """Start receiving ``uid``'s events; returns once the transport would deliver them."""

    @abstractmethod
    async def _unlisten_user(self, uid: str) -> None: ...

    @abstractmethod
    async def _listen_work(self) -> None: ...

    @abstractmethod
    async def _close_transport(self) -> None: ...

    # -- the EventBus protocol -------------------------------------------------------------
    async def publish(self, uid: str, event: Event) -> None:
        """Returns once the event is handed to the transport (or, failing that, delivered to
        this process's own subscribers)."""
        self._batch.append((uid, event))
        await asyncio.shield(self._schedule())

    @asynccontextmanager
    async def subscribe(self, uid: str) -> AsyncIterator[asyncio.Queue[Event]]:
        async with self.local.subscribe(uid) as queue:
            self._users[uid] += 1
            try:
                try:
                    await self._listen_user(uid)
                except Exception as exc:
                    self._failed(exc, "subscribing")
                yield queue
            finally:
                self._users[uid] -= 1
                if self._users[uid] <= 0:
                    del self._users[uid]
                    try:
                        await self._unlisten_user(uid)
                    except Exception as exc:
                        self._failed(exc, "unsubscribing")

    async def wake_workers(self) -> None:
        """Wake this process's workers now and the others' with the next batch (not awaited:
        the work is already durable; the wake-up only spares them a poll interval).

        At most one wake-up leaves this process per ``WAKE_GAP_S``: the first at once, the
        rest of that window as one at its end (a woken worker claims everything due anyway)."""
        await self.local.wake_workers()
        if self._batch_wake or self._wake_timer is not None:
            return
        wait = self._last_wake + WAKE_GAP_S - time.monotonic()
        if wait > 0:
            self._wake_timer = asyncio.get_running_loop().call_later(wait, self._wake_now)
        else:
            self._wake_now()

    def _wake_now(self) -> None:
        self._wake_timer = None
        self._last_wake = time.monotonic()
        self._batch_wake = True
        self._schedule()

    async def wait_for_work(self, timeout: float) -> None:
        if not self._work_listening:
            try:
                await self._listen_work()
                self._work_listening = True
            except Exception as exc:
                self._failed(exc, "listening for wake-ups")
        await self.local.wait_for_work(timeout)

    async def aclose(self) -> None:
        if self._wake_timer is not None:
            self._wake_timer.cancel()
            self._wake_now()
        if self._sender is not None:
            await asyncio.wait([self._sender], timeout=2.0)
            self._sender.cancel()
        await self._close_transport()

    # -- batching --------------------------------------------------------------------------
    def _schedule(self) -> asyncio.Future[None]:
        if self._batch_sent is None:
            self._batch_sent = asyncio.get_running_loop().create_future()
        sent = self._batch_sent
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(
                self._send_loop(), name=f"nudge-bus-{self.transport}"
            )
        return sent

    async def _send_loop(self) -> None:
        while self._batch or self._batch_wake:
            events, wake, sent = self._batch, self._batch_wake, self._batch_sent
            self._batch, self._batch_wake, self._batch_sent = [], False, None
            try:
                if self._resting():
                    self._deliver_here(events)
                else:
                    await self._send(events, wake)
                    self._recovered()
            except Exception as exc:
                self._failed(exc, "publishing")
                self._deliver_here(events)
            finally:
                if sent is not None and not sent.done():
                    sent.set_result(None)

    def _deliver_here(self, events: list[tuple[str, Event]]) -> None:
        for uid, event in events:
            self.local.deliver_local(uid, event)

    # -- failures --------------------------------------------------------------------------
    def _resting(self) -> bool:
        """While the transport is down, try it once per ``RETRY_S``, not once per batch (each
        try may wait for a connect timeout)."""
        return self._failing_since is not None and time.monotonic() - self._last_failure < RETRY_S

    def _failed(self, exc: BaseException, doing: str) -> None:
        now = time.monotonic()
        self._last_failure = now
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_warning < FAILURE_LOG_INTERVAL_S:
            return
        self._last_warning = now
        log.warning(
            "event transport failing: live inbox events stay in this process and workers poll; "
            "check that the server is reachable",
            extra={"transport": self.transport, "doing": doing, "error": repr(exc)},
        )

    def _recovered(self) -> None:
        if self._failing_since is not None:
            down_s = time.monotonic() - self._failing_since
            log.info("event transport back", extra={"transport": self.transport, "down_s": down_s})
            self._failing_since = None
            self._last_warning = 0.0


class RedisEventBus(TransportBus):
    transport: ClassVar[str] = "redis"

    def __init__(self, url: str, *, prefix: str = "nudge:") -> None:
        import redis.asyncio as redis

        super().__init__()
        # Pings an idle subscription now and then, so a dead connection is noticed and
        # re-established (redis-py then subscribes its channels again).
        self.redis = redis.from_url(
            url, health_check_interval=30, socket_keepalive=True, socket_connect_timeout=5
        )
        self.pubsub = self.redis.pubsub()
        self.inbox_prefix = prefix + "inbox:"
        self.work_channel = prefix + "work"
        # One future per SUBSCRIBE sent, per channel, resolved by its reply (replies come in
        # the order the commands were sent).
        self._confirms: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._ready: dict[str, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None

    def _channel(self, uid: str) -> bytes:
        return (self.inbox_prefix + uid).encode()

    async def _send(self, events: list[tuple[str, Event]], wake: bool) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for uid, event in events:
            pipe.publish(self._channel(uid), json_text(event))
        if wake:
            pipe.publish(self.work_channel, b"")
        await pipe.execute()

    async def _subscribe(self, channel: bytes) -> asyncio.Future[None]:
        confirmed = asyncio.get_running_loop().create_future()
        pending = self._confirms.setdefault(channel, deque())
        pending.append(confirmed)
        try:
            await self.pubsub.subscribe(channel)
        except BaseException:
            pending.remove(confirmed)
            raise
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_loop(), name="nudge-bus-redis-reader")
        return confirmed

    async def _listen_user(self, uid: str) -> None:
        ready = self._ready.get(uid)
        if ready is None:
            ready = self._ready[uid] = await self._subscribe(self._channel(uid))
        try:
            await asyncio.wait_for(asyncio.shield(ready), CONFIRM_TIMEOUT_S)
        except TimeoutError:
            log.warning("Redis did not confirm a subscription in time", extra={"uid": uid})

    async def _unlisten_user(self, uid: str) -> None:
        self._ready.pop(uid, None)
        await self.pubsub.unsubscribe(self._channel(uid))

    async def _listen_work(self) -> None:
        await self._subscribe(self.work_channel.encode())

    async def _read_loop(self) -> None:
        while True:
            try:
                message = await self.pubsub.get_message(timeout=10.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc, "receiving")
                await asyncio.sleep(1.0)
                continue
            if message is not None:
                self._on_message(message)

    def _on_message(self, message: dict[str, Any]) -> None:
        channel: bytes = message["channel"]
        kind = message["type"]
        if kind == "subscribe":
            pending = self._confirms.get(channel)
            if pending:
                confirmed = pending.popleft()
                if not confirmed.done():
                    confirmed.set_result(None)
                if not pending:
                    del self._confirms[channel]
            return
        if kind != "message":
            return
        name = channel.decode()
        if name == self.work_channel:
            self.local.deliver_wake()
        elif name.startswith(self.inbox_prefix):
            try:
                event = json.loads(message["data"])
            except ValueError:
                log.warning("unreadable inbox event on Redis", extra={"channel": name})
                return
            self.local.deliver_local(name.removeprefix(self.inbox_prefix), event)

    async def _close_transport(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait([self._reader], timeout=1.0)
        await self.pubsub.aclose()
        await self.redis.aclose()


PG_INBOX = "nudge_inbox"
PG_WORK = "nudge_work"
PG_PAYLOAD_BYTES = 7900  # NOTIFY payloads must be shorter than 8,000 bytes
PG_PARTS_KEEP_S = 60.0  # an incomplete multi-part event is dropped after this long
PG_KEEPALIVE_S = 5.0


def pg_payloads(uid: str, event: Event) -> list[str]:
    """``<uid as JSON>\\n<event as JSON>``, cut into ``#<id>:<i>:<n>:<part>`` pieces when too big.

    The uid comes first so a process can skip events of users it has no clients for without
    parsing them (a JSON string holds no raw newline, so the first one ends it)."""
    whole = json.dumps(uid) + "\n" + json_text(event)
    raw = whole.encode()
    if len(raw) <= PG_PAYLOAD_BYTES:
        return [whole]
    room = PG_PAYLOAD_BYTES - 64  # the part header
    pieces: list[str] = []
    start = 0
    while start < len(raw):
        end = min(start + room, len(raw))
        while end < len(raw) and raw[end] & 0xC0 == 0x80:  # never cut a UTF-8 sequence
            end -= 1
        pieces.append(raw[start:end].decode())
        start = end
    ident = secrets.token_hex(8)
    return [f"#{ident}:{i}:{len(pieces)}:{piece}" for i, piece in enumerate(pieces)]


class PostgresEventBus(TransportBus):
    """LISTEN/NOTIFY over one asyncpg connection of its own (listening, sending, keep-alive)."""

    transport: ClassVar[str] = "postgres"

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self.dsn = dsn
        self._conn: Any = None  # asyncpg.Connection
        self._lock = asyncio.Lock()  # one query at a time on the connection
        self._channels: set[str] = set()
        self._parts: dict[str, tuple[float, list[str | None]]] = {}
        self._keepalive: asyncio.Task[None] | None = None

    async def _live(self) -> Any:
        """The connection, opened (again) with every wanted channel listened to; hold the lock."""
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        import asyncpg

        conn = await asyncpg.connect(
            self.dsn, timeout=5, server_settings={"application_name": "nudge-events"}
        )
        try:
            for channel in sorted(self._channels):
                await conn.add_listener(channel, self._on_notify)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def _listen(self, channel: str) -> None:
        if channel in self._channels:  # only added once LISTEN succeeded
            return
        async with self._lock:
            if channel not in self._channels:
                await (await self._live()).add_listener(channel, self._on_notify)
                self._channels.add(channel)
        if self._keepalive is None:
            self._keepalive = asyncio.create_task(self._keep_alive(), name="nudge-bus-pg-keepalive")

    async def _keep_alive(self) -> None:
        """A lost connection is replaced within a few seconds, listening again."""
        while True:
            await asyncio.sleep(PG_KEEPALIVE_S)
            try:
                async with self._lock:
                    await (await self._live()).execute("SELECT 1")
                self._recovered()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc, "keeping the LISTEN connection")
                if self._conn is not None:
                    self._conn.terminate()

    async def _send(self, events: list[tuple[str, Event]], wake: bool) -> None:
        payloads = [payload for uid, event in events for payload in pg_payloads(uid, event)]
        channels = [PG_INBOX] * len(payloads)
        if wake:
            channels.append(PG_WORK)
            payloads.append("")
        async with self._lock:
            conn = await self._live()
            # One statement, one transaction: the parts of an event arrive together, in order.
            await conn.execute(
                "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)",
                channels,
                payloads,
            )

    async def _listen_user(self, uid: str) -> None:
        await self._listen(PG_INBOX)

    async def _unlisten_user(self, uid: str) -> None:
        return None  # one channel for all users; events of users without clients are skipped

    async def _listen_work(self) -> None:
        await self._listen(PG_WORK)

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        if channel == PG_WORK:
            self.local.deliver_wake()
        elif channel == PG_INBOX:
            whole = self._assemble(payload) if payload.startswith("#") else payload
            if whole is not None:
                self._on_inbox(whole)

    def _on_inbox(self, whole: str) -> None:
        head, _, body = whole.partition("\n")
        try:
            uid = json.loads(head)
            if uid in self._users:
                self.local.deliver_local(uid, json.loads(body))
        except ValueError:
            log.warning("unreadable inbox event on NOTIFY", extra={"payload": whole[:200]})

    def _assemble(self, payload: str) -> str | None:
        """Collect the parts of a multi-part event; returns the whole once the last one is in."""
        try:
            ident, index, count, piece = payload[1:].split(":", 3)
            i, n = int(index), int(count)
        except ValueError:
            log.warning("unreadable inbox event part on NOTIFY", extra={"payload": payload[:200]})
            return None
        now = time.monotonic()
        if ident not in self._parts:
            self._parts = {k: v for k, v in self._parts.items() if now - v[0] < PG_PARTS_KEEP_S}
            self._parts[ident] = (now, [None] * n)
        parts = self._parts[ident][1]
        if not 0 <= i < len(parts):
            return None
        parts[i] = piece
        if any(p is None for p in parts):
            return None
        del self._parts[ident]
        return "".join(p for p in parts if p is not None)

    async def _close_transport(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            await asyncio.wait([self._keepalive], timeout=1.0)
        if self._conn is not None:
            async with self._lock:
                await self._conn.close(timeout=2)


def asyncpg_dsn(database_url: str) -> str:
    """The SQLAlchemy URL (``postgresql+asyncpg://...``) as a plain libpq/asyncpg DSN."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def build_bus(settings: Settings) -> EventBus:
    """Redis when configured, else LISTEN/NOTIFY on PostgreSQL, else in-process (one process)."""
    if settings.redis_url:
        return RedisEventBus(settings.redis_url)
    if not settings.is_sqlite:
        return PostgresEventBus(asyncpg_dsn(settings.database_url))
    return LocalEventBus()
