"""Nudge's Python SDK for app developers.

- ``NudgeClient`` / ``AsyncNudgeClient``: send direct notifications and read their status, with
  retries that never duplicate a send; Omi's integration API (import and read conversations and
  memories).
- ``nudge.sdk.webhook``: receive the platform's webhook calls (signature checks, segments per
  session, trigger phrases, answers).
"""

from nudge.sdk.client import (
    AsyncNudgeClient,
    Conversation,
    ConversationPage,
    Memory,
    NudgeClient,
    RateLimitInfo,
    RetryPolicy,
    SendResult,
)
from nudge.sdk.errors import (
    APIError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    NudgeError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TransportError,
    ValidationError,
)
from nudge.sdk.models import DeliveryState, NotificationStatus

__all__ = [
    "APIError",
    "AsyncNudgeClient",
    "AuthenticationError",
    "Conversation",
    "ConversationPage",
    "DeliveryState",
    "Memory",
    "ConflictError",
    "NotFoundError",
    "NotificationStatus",
    "NudgeClient",
    "NudgeError",
    "PermissionDeniedError",
    "RateLimitError",
    "RateLimitInfo",
    "RetryPolicy",
    "SendResult",
    "ServerError",
    "TransportError",
    "ValidationError",
]
