"""Nudge's Python SDK for app developers.

- ``NudgeClient`` / ``AsyncNudgeClient``: send direct notifications and read their status, with
  retries that never duplicate a send.
- ``nudge.sdk.webhook``: receive the platform's webhook calls (signature checks, segments per
  session, trigger phrases, answers).
"""

from nudge.sdk.client import (
    AsyncNudgeClient,
    DeliveryState,
    NotificationStatus,
    NudgeClient,
    RateLimitInfo,
    RetryPolicy,
    SendResult,
)
from nudge.sdk.errors import (
    APIError,
    AuthenticationError,
    NotFoundError,
    NudgeError,
    RateLimitError,
    ServerError,
    TransportError,
    ValidationError,
)

__all__ = [
    "APIError",
    "AsyncNudgeClient",
    "AuthenticationError",
    "DeliveryState",
    "NotFoundError",
    "NotificationStatus",
    "NudgeClient",
    "NudgeError",
    "RateLimitError",
    "RateLimitInfo",
    "RetryPolicy",
    "SendResult",
    "ServerError",
    "TransportError",
    "ValidationError",
]
