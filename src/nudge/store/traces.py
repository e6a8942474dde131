"""SQL of app traces (one per webhook call) and of the apps' webhook health."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from nudge.ids import id_floor
from nudge.store.fast import insert_statement
from nudge.store.models import App, Delivery, Trace

TRACE_COLUMNS = [c.name for c in Trace.__table__.columns]
_INSERT = insert_statement(Trace, TRACE_COLUMNS)


def insert_traces(conn: Connection, rows: list[dict[str, Any]]) -> None:
    _INSERT.run_many(conn, rows)


def prune_traces(conn: Connection, older_than: float, limit: int) -> int:
    """Delete up to ``limit`` of the oldest traces made before ``older_than`` (ids sort by time:
    a range on the primary key, not a scan)."""
    oldest = (
        select(Trace.id)
        .where(Trace.id < id_floor("tr", older_than))
        .order_by(Trace.id)
        .limit(limit)
        .scalar_subquery()
    )
    return int(conn.execute(delete(Trace).where(Trace.id.in_(oldest))).rowcount or 0)


def trace_page(
    conn: Connection, app_id: str, limit: int, cursor: str | None, **equal: str | None
) -> list[Any]:
    """Up to ``limit`` of the app's traces before ``cursor``, newest first; ``equal``: columns
    (session_id, conversation_id, uid) that must have that value when it is given."""
    q = select(Trace).where(Trace.app_id == app_id)
    if cursor:
        q = q.where(Trace.id < cursor)
    for column, value in equal.items():
        if value:
            q = q.where(getattr(Trace, column) == value)
    return list(conn.execute(q.order_by(Trace.id.desc()).limit(limit)).all())


def trace(conn: Connection, app_id: str, trace_id: str) -> Any | None:
    return conn.execute(select(Trace).where(Trace.id == trace_id, Trace.app_id == app_id)).first()


def deliveries_of(conn: Connection, notification_ids: list[str]) -> list[Any]:
    query = select(Delivery).where(Delivery.notification_id.in_(notification_ids))
    return list(conn.execute(query.order_by(Delivery.id)).all())


def webhook_failing_since(conn: Connection, app_id: str) -> float | None:
    return conn.scalar(select(App.webhook_failing_since).where(App.id == app_id))


def set_failing_since(conn: Connection, app_id: str, since: float | None) -> None:
    """Record when the app's webhook started failing (once); None: it works again."""
    value = None if since is None else func.coalesce(App.webhook_failing_since, since)
    conn.execute(update(App).where(App.id == app_id).values(webhook_failing_since=value))


def disable_failing(conn: Connection, app_id: str, failing_before: float, reason: str) -> bool:
    """Disable the app if it is active and has been failing since before ``failing_before``."""
    active = update(App).where(App.id == app_id, App.status == "active")
    failing = active.where(App.webhook_failing_since <= failing_before)
    return bool(conn.execute(failing.values(status="disabled", status_reason=reason)).rowcount)


def enable(conn: Connection, app_id: str) -> None:
    """Re-enable an app (disabled because its webhook kept failing)."""
    values = {"status": "active", "status_reason": "", "webhook_failing_since": None}
    conn.execute(update(App).where(App.id == app_id).values(values))
