"""The SDK's exceptions: one class per error status, a transport error, and a common base.

Catch ``NudgeError`` for "anything went wrong", or a subclass for one case. Every error carries
``attempts`` (how many requests were made, retries included).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LONE_SURROGATE = (
    "must not contain lone surrogates (an unpaired \\ud800-\\udfff): send valid Unicode"
)


class NudgeError(Exception):
    """Base of every error the SDK raises."""

    def __init__(self, message: str, *, attempts: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts


class TransportError(NudgeError):
    """The platform could not be reached or did not answer (connect, timeout, protocol error)."""


class APIError(NudgeError):
    """The platform answered with an error status. ``detail`` is its ``{"detail": ...}`` text."""

    status_code: int = 0

    def __init__(
        self,
        detail: str,
        *,
        status_code: int,
        headers: Mapping[str, str] | None = None,
        attempts: int = 1,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status_code}: {detail}", attempts=attempts)
        self.detail = detail
        self.status_code = status_code
        self.headers = dict(headers or {})
        self.retry_after = retry_after  # seconds, from the answer's Retry-After (429, 503)


class AuthenticationError(APIError):
    """401: the app secret is missing, unknown, revoked, or belongs to another app."""


class PermissionDeniedError(APIError):
    """403 (integration API): the key is not this app's, the user has not enabled the app, or the
    manifest does not list the action."""


class NotFoundError(APIError):
    """404: the user is unknown or has not installed the app (or the notification is not yours)."""


class ConflictError(APIError):
    """409: the request no longer applies (a cancel after the notification had gone)."""


class ValidationError(APIError):
    """422: the request is invalid (empty uid or message, message too long, bad encoding)."""


class RateLimitError(APIError):
    """429: rate limited. ``retry_after`` is how many seconds the platform asked to wait."""


class ServerError(APIError):
    """5xx: the platform failed; retried with backoff before this is raised."""


_BY_STATUS: dict[int, type[APIError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
    429: RateLimitError,
}


def error_class(status_code: int) -> type[APIError]:
    """The exception class for an error status (other 4xx fall back to ``APIError``)."""
    if status_code >= 500:
        return ServerError
    return _BY_STATUS.get(status_code, APIError)


def describe_validation(errors: list[Any]) -> str:
    """Pydantic's errors as one ``{"detail"}`` line: ``field: what is wrong; ...``."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        where = ".".join(loc) or "request"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "string_unicode":  # pydantic's words for a lone surrogate
            msg = LONE_SURROGATE
        parts.append(f"{where}: {msg}")
    return "; ".join(parts) or "invalid request"
