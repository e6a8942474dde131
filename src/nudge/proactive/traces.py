"""One trace per webhook call, for the app's developer: what was sent, what came back, why.

``detail`` holds each step that ran (docs/proactive.md lists the keys); ``outcome`` is one of
:data:`OUTCOMES`. An answer asking for a proactive notification and carrying a ``message`` has
two: ``outcomes`` lists each, and ``outcome`` is the first that sent something, else the first."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any

from sqlalchemy import Connection

from nudge.errors import NotFound
from nudge.ids import new_id
from nudge.store import traces as sql
from nudge.store.db import Database

log = logging.getLogger("nudge.traces")

OUTCOMES = {
    "no_action": "the app answered without asking for a notification (or with an empty message)",
    "notified": "a notification was generated and queued",
    "quiet": "the model chose not to notify (notify: false, SKIP, or under 5 characters)",
    "held": "the model's message failed the platform's checks (see error): nothing sent",
    "rate_limited": "a proactive notification went out in the last interval: nothing sent",
    "invalid_answer": "the app's answer broke a rule (see error): nothing sent",
    "not_allowed": "capability or install missing: nothing sent",
    "llm_failed": "the LLM call failed (see error): nothing sent",
    "message_sent": "the app's {'message'} answer was queued as a notification",
    "message_refused": "the app's {'message'} answer was refused (see error)",
    "webhook_failed": "the call failed: timeout, connection, non-2xx, redirect or refused target",
    "circuit_open": "calls to this app are paused after repeated failures (first skipped call)",
    "internal_error": "a platform bug stopped the pipeline (logged): nothing sent",
}
SENT = {"notified", "message_sent"}
TEXT_LIMIT = 20_000
_DELIVERY_KEYS = ("provider", "device_id", "state", "attempts", "last_error", "delivered_at")
TRACE_BATCH = 256  # traces per INSERT (the batch writer's transactions stay short)


def bounded(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more chars]"


@dataclass
class TraceRecorder:
    app_id: str
    uid: str
    session_id: str | None
    kind: str  # transcript_processed | memory_creation
    conversation_id: str | None = None
    id: str = field(default_factory=lambda: new_id("tr"))
    created_at: float = field(default_factory=time.time)
    detail: dict[str, Any] = field(default_factory=dict)
    notification_id: str | None = None
    step: str | None = None  # proactive | message, when the answer asks for both

    def outcome(self, outcome: str, error: str | None = None) -> None:
        """Record what happened; while ``step`` is set, one of several outcomes of the same
        answer (see the module docstring)."""
        assert outcome in OUTCOMES, outcome
        if self.step is not None:
            entry = {"step": self.step, "outcome": outcome} | ({"error": error} if error else {})
            self.detail.setdefault("outcomes", []).append(entry)
            if "outcome" in self.detail and (self.detail["outcome"] in SENT or outcome not in SENT):
                return
            self.detail.pop("error", None)
        self.detail["outcome"] = outcome
        if error:
            self.detail["error"] = error

    def row(self) -> dict[str, Any]:
        """The ``traces`` row: every field but ``step``, the recorder's own state."""
        return {name: getattr(self, name) for name in _COLUMNS}


_COLUMNS = tuple(f.name for f in fields(TraceRecorder) if f.name != "step")


class TraceWriter:
    """Queues finished traces; one task writes the queue in bulk (one INSERT for many calls)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: list[TraceRecorder] = []
        self._task: asyncio.Task[None] | None = None

    def save(self, trace: TraceRecorder) -> None:
        self._queue.append(trace)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write())

    async def _write(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:TRACE_BATCH], self._queue[TRACE_BATCH:]
            try:
                await self.db.write(partial(save_traces, traces=batch))
            except Exception:
                log.exception("traces not saved", extra={"count": len(batch)})

    async def aclose(self, timeout: float) -> None:
        if self._task is not None:
            await asyncio.wait([self._task], timeout=timeout)


def save_traces(conn: Connection, traces: list[TraceRecorder]) -> None:
    sql.insert_traces(conn, [t.row() for t in traces])


def _trace_json(row: Any, deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    detail = dict(row.detail or {})
    return {
        "id": row.id,
        "app_id": row.app_id,
        "uid": row.uid,
        "session_id": row.session_id,
        "conversation_id": row.conversation_id,
        "kind": row.kind,
        "created_at": row.created_at,
        "outcome": detail.pop("outcome", None),
        "error": detail.pop("error", None),
        "notification_id": row.notification_id,
        "deliveries": deliveries,
        **detail,
    }


def _traces_json(conn: Connection, rows: list[Any]) -> list[dict[str, Any]]:
    """The traces, each with its notification's deliveries (one query for all)."""
    ids = [r.notification_id for r in rows if r.notification_id]
    deliveries: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in sql.deliveries_of(conn, ids) if ids else []:
        deliveries[d.notification_id].append({k: getattr(d, k) for k in _DELIVERY_KEYS})
    return [_trace_json(r, deliveries.get(r.notification_id or "", [])) for r in rows]


def list_traces(
    conn: Connection, app_id: str, *, limit: int, cursor: str | None, **filters: str | None
) -> dict[str, Any]:
    """Newest first; ``cursor`` is the last id of the previous page; ``filters``: session_id,
    conversation_id, uid (each when given)."""
    rows = sql.trace_page(conn, app_id, limit + 1, cursor, **filters)
    return {
        "items": _traces_json(conn, rows[:limit]),
        "next_cursor": rows[limit - 1].id if len(rows) > limit else None,
    }


def get_trace(conn: Connection, app_id: str, trace_id: str) -> dict[str, Any]:
    row = sql.trace(conn, app_id, trace_id)
    if row is None:
        raise NotFound(f"trace {trace_id!r} not found for app {app_id!r}")
    return _traces_json(conn, [row])[0]
