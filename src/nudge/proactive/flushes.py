"""Claiming conversations to flush: each new segment goes to the apps once, across processes.

One conditional UPDATE (``SKIP LOCKED`` on PostgreSQL) in the transaction that reads the new
segments and advances ``flushed_upto``, gated by the next window (:func:`next_gate`)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from nudge.proactive.conversation import conversation_json, segment_json
from nudge.proactive.pipeline import AppTarget
from nudge.store import conversations as sql

INGEST_BATCH = 256  # requests per ingestion batch (and so conversations per claim-on-ingest)


@dataclass
class Flush:
    """One claimed conversation: the segments to send and, when it just finished, its object."""

    conversation_id: str
    uid: str
    session_id: str | None  # the client's, for traces (webhooks carry the uid, as Omi's)
    segments: list[dict[str, Any]] = field(default_factory=list)
    first_at: float | None = None  # ingest time of the oldest segment sent
    last_at: float | None = None
    conversation: dict[str, Any] | None = None  # set when the conversation just finished
    summary_pending: bool = False  # ... and the LLM is to write its title and overview
    gate: float = 0.0  # when its next window opens
    apps: list[AppTarget] = field(default_factory=list)


def next_gate(became_due: float, started_at: float, interval_s: float) -> float:
    """When the conversation's next call may go out: the start of the next flush window.
    Windows are ``interval_s`` long, centred on multiples of the interval after the conversation
    started, one call each: unlike "one interval after the last call", they do not drift."""
    if interval_s <= 0:
        return became_due
    window = math.floor((became_due - started_at) / interval_s + 0.5)
    return started_at + (window + 0.5) * interval_s


def claim_flushes(
    conn: Connection,
    now: float,
    *,
    limit: int,
    interval_s: float,
    conversation_ids: list[str] | None = None,
) -> list[Flush]:
    """Claim due conversations (among ``conversation_ids`` when given), read their new segments
    and mark them sent, in the caller's transaction."""
    claimed = sql.claim_due(conn, now, limit, conversation_ids)
    if not claimed:
        return []
    flushes = {
        r.id: Flush(
            r.id, r.uid, r.session_id, gate=next_gate(r.flush_lease_until, r.started_at, interval_s)
        )
        for r in claimed
    }
    upto = {r.id: r.flushed_upto for r in claimed}
    for s in sql.new_segments(conn, list(flushes)):
        flush = flushes[s.conversation_id]
        flush.segments.append(segment_json(s))
        flush.first_at = s.created_at if flush.first_at is None else flush.first_at
        flush.last_at = s.created_at
        upto[s.conversation_id] = s.id
    sql.mark_sent(conn, [(r.id, upto[r.id], flushes[r.id].gate) for r in claimed])
    for r in claimed:
        if r.status == "finished":  # it was "finishing": this is its last flush
            segments = sql.segments_of(conn, r.id)
            flushes[r.id].conversation = conversation_json(sql.conversation(conn, r.id), segments)
            flushes[r.id].summary_pending = bool(r.summary_pending)
    by_uid: dict[str, list[AppTarget]] = defaultdict(list)
    for row in sql.installed_apps(conn, list({f.uid for f in flushes.values()})):
        target = AppTarget.from_row(row)
        if target is not None:
            by_uid[row.uid].append(target)
    for flush in flushes.values():
        flush.apps = by_uid.get(flush.uid, [])
    return list(flushes.values())
