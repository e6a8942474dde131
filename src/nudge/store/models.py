"""The tables. Times are UNIX seconds (float) so that SQLite and PostgreSQL compare them alike."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# A notification that counts as unread (the unread count and the APNs badge).
UNREAD = "read_at IS NULL AND archived_at IS NULL"
# A delivery that is a push held back until a window ends (the held-group claim's index).
HELD_ONLY = "state = 'held'"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class App(Base):
    __tablename__ = "apps"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    webhook_secret: Mapped[str] = mapped_column(String(100))
    direct_limit_per_hour: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="active")  # active | disabled
    status_reason: Mapped[str] = mapped_column(Text, default="")
    webhook_failing_since: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class AppKey(Base):
    __tablename__ = "app_keys"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(20))  # "sk_ab12…" shown in listings
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class User(Base):
    __tablename__ = "users"
    uid: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    # {"timezone", "quiet_hours", "daily_cap"} (migration 0007); None: no settings.
    preferences: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class UserFact(Base):
    """A fact about the user (Omi's "memory"): what ``{{user_facts}}`` reads."""

    __tablename__ = "user_facts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(ForeignKey("users.uid", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    # The app that imported it through the integration API; None: added on the platform API
    # (migration 0005).
    app_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)


class Install(Base):
    __tablename__ = "installs"
    uid: Mapped[str] = mapped_column(ForeignKey("users.uid", ondelete="CASCADE"), primary_key=True)
    app_id: Mapped[str] = mapped_column(
        ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    scopes: Mapped[list[Any]] = mapped_column(JSON)
    installed_at: Mapped[float] = mapped_column(Float)
    # The user's settings for this app: {"muted", "proactive", "direct", "channels", "digest_s"}
    # (migration 0007); None: the defaults.
    preferences: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("uid", "platform", "token", name="uq_device_token"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    uid: Mapped[str] = mapped_column(ForeignKey("users.uid", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(String(20))  # fcm | apns | webpush | log
    token: Mapped[str] = mapped_column(Text)  # push token, or the Web Push endpoint
    subscription: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        # The inbox and the hourly window (migration 0003).
        Index("ix_notifications_user_recent", "uid", "id", "app_id", "kind"),
        Index("ix_notifications_dedupe", "dedupe_hash", "created_at"),
        # The unread count (migration 0007).
        Index(
            "ix_notifications_unread",
            "uid",
            sqlite_where=text(UNREAD),
            postgresql_where=text(UNREAD),
        ),
        UniqueConstraint("app_id", "idempotency_key", name="uq_notification_idempotency"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    app_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    uid: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(20))  # direct | proactive
    type: Mapped[str] = mapped_column(String(64), default="")
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    dedupe_hash: Mapped[str] = mapped_column(String(64))
    collapse_key: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    read_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Migration 0007: the user in control.
    priority: Mapped[str] = mapped_column(String(8), default="normal", server_default="normal")
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # from the ttl
    send_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # a scheduled send
    # Why no push went out at once: "" none, "muted" (none at all), "quiet" (until the user's
    # quiet hours end), "digest" (until the app's digest window ends); hold_reason in words.
    hold: Mapped[str] = mapped_column(String(20), default="", server_default="")
    hold_reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    seen_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    archived_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Delivery(Base):
    """One target of one notification: the inbox, or one device. The delivery queue itself."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_due", "state", "next_attempt_at"),
        # A device's held pushes (migration 0008): claimed as one group when their window ends.
        Index(
            "ix_deliveries_held",
            "device_id",
            sqlite_where=text(HELD_ONLY),
            postgresql_where=text(HELD_ONLY),
        ),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    notification_id: Mapped[str] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(String(20))
    device_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # queued | sending | retrying | delivered | failed | token-removed, and (migration 0007)
    # expired (its ttl ran out first) | cancelled (by the sending app) | merged (sent as part of
    # one push for several held notifications), and (migration 0008) held (a push waiting for the
    # end of the user's quiet hours or the app's digest window)
    state: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class ChatMessage(Base):
    """The chat between a user and an app: what ``{{user_chat}}`` reads."""

    __tablename__ = "chat_messages"
    __table_args__ = (Index("ix_chat_user_app", "uid", "app_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(128))
    app_id: Mapped[str] = mapped_column(String(64))
    sender: Mapped[str] = mapped_column(String(10))  # app | user
    text: Mapped[str] = mapped_column(Text)
    notification_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class Conversation(Base):
    """A conversation, live or finished, in the shape of Omi's (migration 0004).

    ``id`` is the conversation's own id; ``session_id`` is the id the client streams it under
    (Omi's clients reuse theirs, the uid, for every conversation): at most one live conversation
    per ``(uid, session_id)``, and a segment after it finished opens a new one. Imported
    conversations have no session. ``transcript`` is the full text used for retrieval.
    """

    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_user", "uid", "created_at"),
        # Only conversations waiting for a flush (migration 0002).
        Index(
            "ix_conversations_flush_due",
            "flush_due_at",
            sqlite_where=text("flush_due_at IS NOT NULL"),
            postgresql_where=text("flush_due_at IS NOT NULL"),
        ),
        # The live conversation of a session; the conflict target when one is opened.
        Index(
            "uq_conversations_live_session",
            "uid",
            "session_id",
            unique=True,
            sqlite_where=text("status = 'live'"),
            postgresql_where=text("status = 'live'"),
        ),
        # Only live conversations that end by themselves after a silence.
        Index(
            "ix_conversations_silence_due",
            "silence_due_at",
            sqlite_where=text("silence_due_at IS NOT NULL"),
            postgresql_where=text("silence_due_at IS NOT NULL"),
        ),
    )
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    uid: Mapped[str] = mapped_column(ForeignKey("users.uid", ondelete="CASCADE"))
    session_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # live | finishing (its last flush and memory webhooks are due) | finished
    status: Mapped[str] = mapped_column(String(20), default="live")
    source: Mapped[str] = mapped_column(String(40), default="omi")  # Omi's ConversationSource
    language: Mapped[str | None] = mapped_column(String(20), nullable=True)
    geolocation: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    external_data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    discarded: Mapped[bool] = mapped_column(Boolean, default=False)
    app_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the importing app
    # Omi's ``structured``.
    title: Mapped[str] = mapped_column(Text, default="")
    overview: Mapped[str] = mapped_column(Text, default="")
    emoji: Mapped[str] = mapped_column(String(32), default="🧠")
    category: Mapped[str] = mapped_column(String(40), default="other")
    action_items: Mapped[list[Any]] = mapped_column(JSON, default=list)
    events: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Title and overview are plain fallbacks the LLM may replace when the conversation finishes.
    summary_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    transcript: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # When a live conversation ends by itself (no segment for NUDGE_CONVERSATION_SILENCE_S).
    silence_due_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Webhook flushing: segments with id > flushed_upto are still to be sent.
    flushed_upto: Mapped[int] = mapped_column(Integer, default=0)
    flush_due_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    flush_lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)


class Segment(Base):
    __tablename__ = "segments"
    __table_args__ = (Index("ix_segments_conversation", "conversation_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    uid: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text)
    speaker: Mapped[str] = mapped_column(String(64), default="SPEAKER_00")
    speaker_id: Mapped[int] = mapped_column(Integer, default=0)
    is_user: Mapped[bool] = mapped_column(Boolean, default=False)
    start: Mapped[float] = mapped_column(Float, default=0.0)
    end: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[float] = mapped_column(Float)


class Trace(Base):
    """What happened on one webhook call, for the app's developer."""

    __tablename__ = "traces"
    __table_args__ = (Index("ix_traces_app", "app_id", "id"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(64))
    uid: Mapped[str] = mapped_column(String(128))
    session_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    conversation_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    kind: Mapped[str] = mapped_column(String(40))  # transcript_processed | memory_creation | ...
    created_at: Mapped[float] = mapped_column(Float)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    notification_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class RateClaim(Base):
    """An atomic "slot taken until" row, used by the SQL rate-limit backend."""

    __tablename__ = "rate_claims"
    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    until: Mapped[float] = mapped_column(Float)
    token: Mapped[str] = mapped_column(String(64))


class WindowBucket(Base):
    """One minute of the hourly window of a (kind, app, user): how many notifications were
    accepted in it (migration 0006). A window reads at most 61 of these rows, however many
    notifications the user was sent; buckets that left every window are pruned."""

    __tablename__ = "window_buckets"
    # Stored in primary-key order (no rowid): a window's buckets are one range of the table.
    __table_args__ = (Index("ix_window_buckets_minute", "minute"), {"sqlite_with_rowid": False})
    uid: Mapped[str] = mapped_column(String(128), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    minute: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(Integer)


class RateCounter(Base):
    """A fixed-window request count (the integration API's limits, migration 0005)."""

    __tablename__ = "rate_counters"
    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    window_end: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer)
