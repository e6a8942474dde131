"""Errors that map to an HTTP status. Each says what to fix."""

from __future__ import annotations


class NudgeError(Exception):
    status_code = 400

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class Unauthorized(NudgeError):
    status_code = 401


class Forbidden(NudgeError):
    status_code = 403


class NotFound(NudgeError):
    status_code = 404


class Conflict(NudgeError):
    status_code = 409


class Invalid(NudgeError):
    status_code = 422


class RateLimited(NudgeError):
    status_code = 429

    def __init__(self, detail: str, *, retry_after: int, headers: dict[str, str] | None = None):
        super().__init__(detail, headers={**(headers or {}), "Retry-After": str(retry_after)})
        self.retry_after = retry_after


class Unavailable(NudgeError):
    status_code = 503
