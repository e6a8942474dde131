"""The provider interface: one class per service, one ``send`` method, one result type.

Adding a provider means writing one module with a class like :class:`LogProvider` and adding one
line to ``PROVIDERS`` in ``nudge.delivery.providers``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from nudge.bus.local import EventBus
    from nudge.config import Settings


class ProviderNotConfigured(Exception):
    """The provider's settings are missing; the message says which to set."""


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # transient: try again later (honouring retry_after)
    TOKEN_INVALID = "token-invalid"  # the device is gone: remove it
    FAILED = "failed"  # permanent for this message: record the provider's reason
    PROVIDER_ALERT = "provider-alert"  # our credentials/config are wrong: keep devices, retry later
    # Decided by the worker, never by a provider:
    EXPIRED = "expired"  # the sender's ttl ran out before it could be sent: not sent
    MERGED = "merged"  # sent inside one summary push with other held notifications


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    reason: str = ""
    retry_after: float | None = None  # seconds, from the provider's Retry-After


@dataclass(frozen=True)
class PushMessage:
    """What every provider sends: title, body, string data and the collapse key."""

    notification_id: str
    app_id: str | None
    uid: str
    title: str
    body: str
    data: dict[str, Any]
    collapse_key: str
    created_at: float
    priority: str = "normal"  # low | normal | high: the provider's priority/urgency fields
    expires_at: float | None = None  # from the sender's ttl: the provider's lifetime fields
    send_at: float | None = None  # a scheduled send: without a ttl, its lifetime starts then
    badge: int | None = None  # the user's unread count (APNs badge); None: leave it unchanged


@dataclass(frozen=True)
class Target:
    """Where to send: a device (token, or a Web Push subscription), or the user's inbox."""

    platform: str
    device_id: str | None = None
    token: str | None = None
    subscription: dict[str, Any] | None = None


@dataclass
class ProviderDeps:
    """What providers may need, handed over explicitly at start-up."""

    settings: Settings
    bus: EventBus
    extra: dict[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    name: ClassVar[str]

    async def send(self, message: PushMessage, target: Target) -> SendResult: ...

    async def aclose(self) -> None: ...
