"""The user's preferences (DESIGN §10): reading and replacing them, and what they do to a
notification at acceptance (muted, quiet hours, digest, the daily cap).

At acceptance, :func:`hold_for` is pure: it sees the settings found with the install and says
whether the notification's pushes go now, later (``quiet``, ``digest``: the device deliveries
come due at the end of the window) or not at all (``muted``: kept in the inbox only). The daily
cap is the one part that needs the database: :func:`over_daily_cap` counts pushes in a
``rate_counters`` row per user inside the acceptance transaction, so concurrent batches (and
processes) never let more than the cap through.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as clock
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ConfigDict, Field
from sqlalchemy import Connection

from nudge.errors import Invalid, NotFound
from nudge.sdk.models import AppPreferences, Preferences, QuietHours
from nudge.store import preferences as store
from nudge.store.notifications import hit_counter

_STRICT = ConfigDict(extra="forbid", strict=True)
USER_KEYS = ("timezone", "quiet_hours", "daily_cap")
_DEFAULT_USER = Preferences().model_dump(include=set(USER_KEYS))
_DEFAULT_APP = AppPreferences().model_dump()


class QuietHoursIn(QuietHours):
    model_config = _STRICT


class AppPreferencesIn(AppPreferences):
    model_config = _STRICT


class PreferencesIn(Preferences):
    """The body of ``PUT``: the whole document (a key left out is its default); unknown keys
    and values of the wrong JSON type are refused, each naming its field."""

    model_config = _STRICT
    quiet_hours: QuietHoursIn | None = None
    # Narrows the value type (the strict model); pydantic reads the override, mypy's dict is
    # invariant.
    apps: dict[str, AppPreferencesIn] = Field(default_factory=dict)  # type: ignore[assignment]


def get_preferences(conn: Connection, uid: str) -> dict[str, Any]:
    """The user's whole document: their settings and every installed app's, defaults filled in."""
    found = store.read(conn, uid)
    if found is None:
        raise NotFound(f"user {uid!r} not found")
    user, apps = found
    return {
        **_DEFAULT_USER,
        **(user or {}),
        "apps": {app_id: {**_DEFAULT_APP, **(value or {})} for app_id, value in apps.items()},
    }


def put_preferences(conn: Connection, uid: str, document: PreferencesIn) -> dict[str, Any]:
    """Write work: replace the whole document (installed apps left out go back to the
    defaults). Only installed apps may be named (422 naming the first that is not)."""
    found = store.read(conn, uid)
    if found is None:
        raise NotFound(f"user {uid!r} not found")
    installed = found[1]
    for app_id in document.apps:
        if app_id not in installed:
            raise Invalid(f"apps.{app_id}: user {uid!r} has not installed app {app_id!r}")
    user = document.model_dump(include=set(USER_KEYS))
    apps = {
        app_id: document.apps[app_id].model_dump() if app_id in document.apps else None
        for app_id in installed
    }
    # The defaults are stored as NULL: acceptance then skips them without looking inside.
    store.write(
        conn,
        uid,
        None if user == _DEFAULT_USER else user,
        {a: None if v == _DEFAULT_APP else v for a, v in apps.items()},
    )
    for app_id, value in apps.items():
        if value is not None:
            _withdraw(conn, uid, app_id, value)
    _retime(conn, uid, None if user == _DEFAULT_USER else user, apps, time.time())
    return get_preferences(conn, uid)


RELEASED = "released early: the user changed their quiet hours or digest"


def _retime(
    conn: Connection,
    uid: str,
    user: Mapping[str, Any] | None,
    apps: Mapping[str, Mapping[str, Any] | None],
    now: float,
) -> None:
    """Pushes still held wait as the new settings say: held as they would have been held when
    accepted (the new window's end, never before now), or due at once if the new settings hold
    them no more. They stay ``held``, so a device's group still goes out as one summary."""
    due: dict[str, float] = {}
    holds: dict[str, tuple[str, str]] = {}
    for push in store.held_pushes(conn, uid):
        hold = hold_for(
            push.kind, push.priority, apps.get(push.app_id), user, push.send_at or push.created_at
        )
        if hold.until is not None:
            at, why = max(hold.until, now), (hold.kind, hold.reason)
        else:
            at, why = now, (push.hold, RELEASED)
        if at != push.next_attempt_at:
            due[push.id] = at
        if why != (push.hold, push.hold_reason):
            holds[push.notification_id] = why
    store.retime_pushes(conn, due, holds, now)


KINDS = ("direct", "admin", "proactive", "message")


def _withdraw(conn: Connection, uid: str, app_id: str, app: Mapping[str, Any]) -> None:
    """Pushes already accepted (held, scheduled or queued) that the new settings forbid do not
    go either: what a preference forbids is never sent, whenever it was accepted."""
    by_reason: dict[str, list[str]] = {}
    for kind in KINDS:
        reason = mute_reason(kind, app)
        if reason is not None:
            by_reason.setdefault(reason, []).append(kind)
    for reason, kinds in by_reason.items():
        store.withdraw_pushes(
            conn, uid, app_id, None if len(kinds) == len(KINDS) else kinds, reason
        )


@dataclass(frozen=True)
class Hold:
    """What the preferences do to one notification's pushes: ``kind`` "" (go when due),
    "muted" (none, inbox only), "quiet" or "digest" (wait ``until``); ``reason`` in words."""

    kind: str = ""
    reason: str = ""
    until: float | None = None
    inbox: bool = True  # False: the app's channels leave the inbox out (no live inbox event)


NO_HOLD = Hold()


def hold_for(
    kind: str,
    priority: str,
    app: Mapping[str, Any] | None,
    user: Mapping[str, Any] | None,
    due: float,
) -> Hold:
    """The hold of a notification of ``kind`` and ``priority`` due at ``due`` (UNIX s), given
    the user's settings for the app and their own (None: defaults, nothing held)."""
    if app is None and user is None:
        return NO_HOLD
    app = app or {}
    inbox = "inbox" in app.get("channels", ("push", "inbox"))
    muted = mute_reason(kind, app)
    if muted is not None:
        return Hold("muted", muted, inbox=inbox)
    zone = ZoneInfo((user or {}).get("timezone") or "UTC")
    hold, at = NO_HOLD, due
    digest_s = app.get("digest_s") or 0
    if digest_s > 0:
        # Windows aligned on multiples of digest_s: every notification of the window ends alike.
        at = (due // digest_s + 1) * digest_s
        hold = Hold("digest", f"digest until {_clock_at(at, zone)} {zone.key}", at, inbox)
    quiet = (user or {}).get("quiet_hours")
    if quiet and not (priority == "high" and quiet.get("allow_high")):
        end = quiet_end(quiet["start"], quiet["end"], zone, at)
        if end is not None:
            hold = Hold("quiet", f"quiet hours until {quiet['end']} {zone.key}", end, inbox)
    return hold if hold.kind else Hold(inbox=inbox)


def mute_reason(kind: str, app: Mapping[str, Any]) -> str | None:
    """Why the user's settings for the app allow a notification of ``kind`` no push; None if
    they allow it."""
    flag = "proactive" if kind in ("proactive", "message") else "direct"
    if app.get("muted"):
        return "app muted by the user"
    if not app.get(flag, True):
        return f"{flag} notifications of this app turned off by the user"
    if "push" not in app.get("channels", ("push",)):
        return "pushes of this app turned off by the user (inbox only)"
    return None


def quiet_end(start: str, end: str, zone: ZoneInfo, at: float) -> float | None:
    """When the quiet window that ``at`` falls in ends (UNIX s), or None if it falls outside.
    Wall-clock times in ``zone``: DST-correct (an end in a skipped hour comes at the same
    distance past the jump; one in a repeated hour at its first occurrence)."""
    local = datetime.fromtimestamp(at, zone)
    minute = local.hour * 60 + local.minute
    first, last = _minutes(start), _minutes(end)
    if first < last:
        inside, next_day = first <= minute < last, False
    else:  # wraps midnight
        inside, next_day = minute >= first or minute < last, minute >= first
    if not inside:
        return None
    day = local.date() + timedelta(days=1 if next_day else 0)
    return datetime.combine(day, clock(last // 60, last % 60), tzinfo=zone).timestamp()


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _clock_at(at: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(at, zone).strftime("%H:%M:%S")


DAILY_CAP_REASON = "daily cap of {cap} pushes reached (resets at midnight {zone})"


def over_daily_cap(
    conn: Connection, pushing: Sequence[tuple[str, Mapping[str, Any]]], now: float
) -> list[bool]:
    """For each (uid, the user's settings with a ``daily_cap``) of notifications that would
    push, in order: whether it is over the cap of the user's local day. The user's
    ``rate_counters`` row (a window ending at the user's next midnight) counts the pushes let
    through, upserted in the acceptance transaction: exact under concurrency (the row stays
    locked until commit). Rows are taken in uid order, so concurrent batches lock alike."""
    over = [False] * len(pushing)
    for index in sorted(range(len(pushing)), key=lambda i: pushing[i][0]):
        uid, user = pushing[index]
        zone = ZoneInfo(user.get("timezone") or "UTC")
        local = datetime.fromtimestamp(now, zone)
        midnight = datetime.combine(local.date() + timedelta(days=1), clock(), tzinfo=zone)
        key = f"daily_cap:{uid}"
        count, _ = hit_counter(conn, key, now, midnight.timestamp() - now)
        if count > int(user["daily_cap"]):
            over[index] = True
            store.uncount(conn, key)
    return over


def cap_reason(user: Mapping[str, Any]) -> str:
    return DAILY_CAP_REASON.format(cap=user["daily_cap"], zone=user.get("timezone") or "UTC")
