"""Live events: the inbox stream (per user) and the worker wake-up signal, in one process
(``nudge.bus.transport`` carries them between processes)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol


class EventBus(Protocol):
    async def publish(self, uid: str, event: dict[str, Any]) -> None: ...

    def subscribe(self, uid: str) -> Any:
        """An async context manager yielding an ``asyncio.Queue`` of the user's events."""
        ...

    async def wake_workers(self) -> None:
        """Tell delivery workers (in any process) that new deliveries are due."""
        ...

    async def wait_for_work(self, timeout: float) -> None:
        """Return when woken or after ``timeout`` seconds."""
        ...

    async def aclose(self) -> None: ...


class LocalEventBus:
    """In-process fan-out with bounded queues (a slow client drops events, never blocks sends)."""

    def __init__(self, queue_size: int = 1000) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self._queue_size = queue_size
        self._work = asyncio.Event()

    async def publish(self, uid: str, event: dict[str, Any]) -> None:
        self.deliver_local(uid, event)

    def deliver_local(self, uid: str, event: dict[str, Any]) -> None:
        for queue in list(self._subscribers.get(uid, ())):
            if not queue.full():
                queue.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self, uid: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._queue_size)
        self._subscribers[uid].add(queue)
        try:
            yield queue
        finally:
            self._subscribers[uid].discard(queue)
            if not self._subscribers[uid]:
                del self._subscribers[uid]

    async def wake_workers(self) -> None:
        self.deliver_wake()

    def deliver_wake(self) -> None:
        self._work.set()

    async def wait_for_work(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._work.wait(), timeout)
        except TimeoutError:
            pass
        self._work.clear()

    async def aclose(self) -> None:
        return None
