"""The API's wire shapes (pydantic): the server answers with them, the SDK reads them."""

# Fields are declared in the order the server writes them: the answers keep their bytes.

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCOPES = ("user_name", "user_facts", "user_context", "user_chat")
PRIORITIES = ("low", "normal", "high")  # a notification's priority; normal when not given
TTL_MAX_S = 2_419_200  # the longest ttl: 28 days, the longest FCM keeps a message


def check_priority(value: object, name: str = "priority") -> str:
    """``value`` if it is a priority, else a ValueError naming ``name`` (server and SDK alike)."""
    if not isinstance(value, str) or value not in PRIORITIES:
        raise ValueError(f"{name}: must be one of {', '.join(PRIORITIES)}, not {value!r:.40}")
    return value


def check_ttl(value: object, name: str = "ttl") -> int:
    """``value`` if it is a whole number of seconds from 1 to 28 days, else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= TTL_MAX_S:
        raise ValueError(
            f"{name}: must be a whole number of seconds from 1 to {TTL_MAX_S} (28 days), "
            f"not {value!r:.40}"
        )
    return value


class Open(BaseModel):
    """An answer with more fields than it declares (kept, after the declared ones)."""

    model_config = ConfigDict(extra="allow")


class Status(BaseModel):
    status: str


class NotificationAccepted(BaseModel):
    """A direct notification, accepted (``duplicate`` only when it was one)."""

    status: str
    notification_id: str
    devices: int
    duplicate: bool | None = None


class Notification(BaseModel):
    """One inbox item."""

    id: str
    app_id: str | None
    kind: str  # direct | proactive
    type: str
    title: str
    body: str
    data: dict[str, Any]
    created_at: float
    read: bool
    # The user in control (defaults: what a server before them answers).
    seen: bool = False
    archived: bool = False
    priority: str = "normal"  # low | normal | high
    expires_at: float | None = None
    send_at: float | None = None  # a scheduled send
    hold: str = ""  # "" | muted | quiet | digest: why no push went out at once
    hold_reason: str = ""


class DeliveryState(BaseModel):
    id: str
    provider: str
    device_id: str | None
    # queued, held, delivered, retrying, failed, token-removed, expired, cancelled, merged
    state: str
    attempts: int
    last_error: str
    next_attempt_at: float | None
    delivered_at: float | None


class NotificationStatus(Notification):
    """A notification an app sent and the state of each of its deliveries.

    ``state`` sums them up: scheduled | held | muted | queued | sending | delivered |
    partly_delivered | failed | expired | cancelled ("" from a server before them); ``reason``
    says why it is held, muted, expired, cancelled or failed (else "")."""

    uid: str
    state: str = ""
    reason: str = ""
    deliveries: list[DeliveryState]


class Inbox(BaseModel):
    items: list[Notification]
    next_cursor: str | None


class UnreadCount(BaseModel):
    """How many of the user's notifications are neither read nor archived (the APNs badge)."""

    unread: int


class ReadAllResult(BaseModel):
    """``read-all``: how many notifications it marked read, and how many stay unread."""

    changed: int
    unread: int


class AppCreated(BaseModel):
    app_id: str
    app_secret: str
    webhook_secret: str
    key_id: str


class KeyCreated(BaseModel):
    key_id: str
    app_secret: str


class AppInfo(BaseModel):
    app_id: str
    name: str
    manifest: dict[str, Any]
    direct_limit_per_hour: int | None
    status: str  # active | disabled
    status_reason: str


class KeyInfo(BaseModel):
    key_id: str
    hint: str
    created_at: float
    revoked: bool
    revoked_at: float | None


class UserCreated(BaseModel):
    uid: str
    user_token: str


class InstalledApp(BaseModel):
    app_id: str
    scopes: list[str]
    installed_at: float


class UserInfo(BaseModel):
    uid: str
    name: str
    apps: list[InstalledApp]


class Facts(BaseModel):
    facts: list[str]


HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
MAX_DIGEST_S = 86_400


class QuietHours(BaseModel):
    """A daily window, in the user's time zone, in which pushes wait until it ends."""

    start: str = Field(description='"HH:MM"; may be after end (the window wraps midnight)')
    end: str = Field(description='"HH:MM", not equal to start')
    allow_high: bool = Field(default=False, description="high priority pushes go out anyway")

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not HHMM.match(value):
            raise ValueError('must be a 24-hour time "HH:MM", e.g. "22:00"')
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end must differ (an empty window)")
        return self


class AppPreferences(BaseModel):
    """The user's settings for one installed app; the defaults change nothing."""

    muted: bool = False
    proactive: bool = True  # the app's proactive notifications and webhook message answers
    direct: bool = True  # what the app sends through the API
    channels: list[Literal["push", "inbox"]] = Field(
        default=["push", "inbox"], min_length=1, max_length=2
    )
    digest_s: int = Field(default=0, ge=0, le=MAX_DIGEST_S)

    @field_validator("channels")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each channel at most once")
        return value


class Preferences(BaseModel):
    """``GET``/``PUT /v1/users/{uid}/preferences``: the user's settings and each installed app's."""

    timezone: str = Field(default="UTC", description="an IANA time zone name")
    quiet_hours: QuietHours | None = None
    daily_cap: int | None = Field(default=None, ge=1, description="pushes per local day")
    apps: dict[str, AppPreferences] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
            known = value != "localtime"  # a file some systems have: the machine's own zone
        except (ValueError, ZoneInfoNotFoundError):
            known = False
        if not known:
            raise ValueError(f"{value!r} is not an IANA time zone name (Europe/Paris)")
        return value


class AuthStep(BaseModel):
    name: str
    url: str


class Installed(BaseModel):
    uid: str
    app_id: str
    scopes: list[str]
    auth_steps: list[AuthStep] | None = None  # apps with an external integration


class DeviceAdded(BaseModel):
    id: str
    platform: str
    created: bool


class DeviceInfo(BaseModel):
    id: str
    platform: str  # fcm | apns | webpush | log
    token_hint: str
    created_at: float


class ChatMessage(BaseModel):
    sender: str  # app | user
    text: str
    notification_id: str | None
    created_at: float


class Chat(BaseModel):
    messages: list[ChatMessage]


class SegmentsAccepted(BaseModel):
    session_id: str
    conversation_id: str
    accepted: int


class SessionConversation(Open):
    """A streamed conversation in Omi's shape (every field of Omi's model), plus ``session_id``."""

    id: str
    created_at: str | None
    updated_at: str | None
    started_at: str | None
    finished_at: str | None
    source: str
    language: str | None
    structured: dict[str, Any]
    transcript_segments: list[dict[str, Any]]


class TraceDelivery(BaseModel):
    provider: str
    device_id: str | None
    state: str
    attempts: int
    last_error: str
    delivered_at: float | None


class Trace(Open):
    """One webhook call to an app and what came of it (more fields by kind and outcome)."""

    id: str
    app_id: str
    uid: str
    session_id: str | None
    conversation_id: str | None
    kind: str
    created_at: float
    outcome: str | None
    error: str | None
    notification_id: str | None
    deliveries: list[TraceDelivery]


class TracedApp(BaseModel):
    status: str
    status_reason: str
    webhook_failing_since: float | None


class TracePage(BaseModel):
    items: list[Trace]
    next_cursor: str | None
    app: TracedApp


class Ready(BaseModel):
    status: str  # ok | unavailable
    providers: list[str] | None = None
    off: dict[str, str] | None = None  # provider -> why it is not configured
    detail: str | None = None


class WhoAmI(BaseModel):
    role: str  # admin | user | app
    uid: str | None = None
    name: str | None = None
    app_id: str | None = None


class ConsoleUser(BaseModel):
    uid: str
    name: str
    created_at: float


class ConsoleUsers(BaseModel):
    users: list[ConsoleUser]


class FactRow(BaseModel):
    text: str
    app_id: str | None  # the app that imported it; None: added on the platform API
    created_at: float


class ConversationRow(BaseModel):
    id: str
    title: str
    source: str  # omi (streamed) | external_integration (imported by app_id)
    app_id: str | None
    status: str
    started_at: float


class Knowledge(BaseModel):
    facts: list[FactRow]
    conversations: list[ConversationRow]


# --- Omi's integration API ----------------------------------------------------------------


class SegmentItem(BaseModel):
    text: str
    speaker: str | None = None
    speaker_id: int | None = None
    is_user: bool = False
    person_id: str | None = None
    start: float = 0.0
    end: float = 0.0


class Structured(BaseModel):
    title: str
    overview: str
    emoji: str = "🧠"
    category: str = "other"
    action_items: list[dict[str, Any]] = Field(default_factory=list)
    events: list[dict[str, Any]] = Field(default_factory=list)


class GeolocationItem(BaseModel):
    google_place_id: str | None = None
    latitude: float
    longitude: float
    address: str | None = None
    location_type: str | None = None


class ConversationItem(BaseModel):
    """Omi's ``ConversationItem`` (its integration API's view of a conversation)."""

    id: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    source: str
    structured: Structured
    transcript_segments: list[SegmentItem] = Field(default_factory=list)
    discarded: bool = False
    app_id: str | None = None
    language: str | None = None
    external_data: dict[str, Any] | None = None
    geolocation: GeolocationItem | None = None
    status: str | None = None

    @property
    def title(self) -> str:
        return self.structured.title

    @property
    def overview(self) -> str:
        return self.structured.overview


class ConversationCreated(BaseModel):
    conversation: ConversationItem


class ConversationsResponse(BaseModel):
    conversations: list[ConversationItem]


class SearchConversationsResponse(BaseModel):
    conversations: list[ConversationItem]
    total_pages: int
    current_page: int
    per_page: int


class MemoryItem(BaseModel):
    """Omi's ``MemoryItem`` (its ``MemoryDB`` fields that mean something here)."""

    id: str
    uid: str
    content: str
    category: str = Field(description="always 'system': facts about the user")
    visibility: str = "private"
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    manually_added: bool = Field(description="added on the platform API, not by an app")
    reviewed: bool
    edited: bool = False
    app_id: str | None = Field(default=None, description="the app that imported it")


class MemoriesResponse(BaseModel):
    memories: Sequence[MemoryItem]  # a list; Sequence lets the server pass its subclass
