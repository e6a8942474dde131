"""The app-disable policy: what one webhook call's outcome changes in its app's health."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

Change = Literal["recovered", "failing", "disable"] | None


def health_change(
    ok: bool, failing_since: float | None, now: float, disable_after_s: float
) -> Change:
    """``recovered``: forget when it started failing; ``failing``: remember it starts now;
    ``disable``: it failed for ``disable_after_s`` (the database checks again); None: nothing."""
    if ok:
        return "recovered" if failing_since is not None else None
    if failing_since is None:
        return "failing"
    return "disable" if now - failing_since >= disable_after_s else None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


def disable_reason(
    app_id: str, url: str, failing_since: float, now: float, error: str | None
) -> str:
    """The app's ``status_reason`` once disabled: what failed, since when, how to re-enable it."""
    return (
        f"disabled at {_iso(now)}: its webhook has failed since {_iso(failing_since)} "
        f"(last error: {error}). Fix {url}, then re-enable the app with "
        f"POST /v1/apps/{app_id}/enable"
    )
