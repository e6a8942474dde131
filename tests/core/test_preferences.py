"""What the preferences do to a notification at acceptance, without a database: muted, a kind
turned off, inbox-only, quiet hours (time zones, midnight, DST), digest windows."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from nudge.core.notifications import (
    Accepted,
    Limits,
    NotificationRequest,
    decide,
    dedupe_hash,
)
from nudge.core.preferences import NO_HOLD, Hold, hold_for, quiet_end
from tests.core.test_acceptance_decisions import found

PARIS = ZoneInfo("Europe/Paris")
LIMITS = Limits(default_per_hour=100, dedupe_window_s=60)
NIGHT = {"start": "22:00", "end": "07:00", "allow_high": False}


def at(text: str, zone: ZoneInfo = PARIS) -> float:
    """UNIX time of a wall-clock ``YYYY-MM-DD HH:MM`` in ``zone``."""
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def paris(quiet: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return {"timezone": "Europe/Paris", "quiet_hours": quiet, "daily_cap": None, **kw}


def test_no_preferences_hold_nothing() -> None:
    assert hold_for("direct", "normal", None, None, at("2026-12-08 23:00")) is NO_HOLD
    defaults = {"muted": False, "proactive": True, "direct": True, "channels": ["push", "inbox"]}
    assert hold_for("direct", "normal", defaults | {"digest_s": 0}, paris(), 0.0) == NO_HOLD


@pytest.mark.parametrize(
    ("kind", "app", "reason"),
    [
        ("direct", {"muted": True}, "app muted by the user"),
        ("proactive", {"muted": True, "proactive": True}, "app muted by the user"),
        ("direct", {"direct": False}, "direct notifications of this app turned off by the user"),
        ("proactive", {"proactive": False}, "proactive notifications"),
        ("message", {"proactive": False}, "proactive notifications"),  # webhook answers
        ("direct", {"channels": ["inbox"]}, "inbox only"),
    ],
)
def test_muted_app_or_kind_or_no_push_channel(kind: str, app: dict[str, Any], reason: str) -> None:
    hold = hold_for(kind, "high", app, paris(NIGHT), at("2026-12-08 23:00"))
    assert hold.kind == "muted" and reason in hold.reason and hold.until is None
    assert hold.inbox


def test_a_kind_turned_off_leaves_the_other_kind_alone() -> None:
    assert hold_for("direct", "normal", {"proactive": False}, None, 0.0).kind == ""
    assert hold_for("proactive", "normal", {"direct": False}, None, 0.0).kind == ""


def test_channels_without_inbox_drop_only_the_inbox_delivery() -> None:
    hold = hold_for("direct", "normal", {"channels": ["push"]}, None, 0.0)
    assert (hold.kind, hold.inbox) == ("", False)
    muted = hold_for("direct", "normal", {"muted": True, "channels": ["push"]}, None, 0.0)
    assert (muted.kind, muted.inbox) == ("muted", False)


@pytest.mark.parametrize(
    ("now", "end"),
    [
        ("2026-12-08 22:00", "2026-12-09 07:00"),  # the first minute
        ("2026-12-08 23:59", "2026-12-09 07:00"),  # before midnight: ends tomorrow
        ("2026-12-09 00:30", "2026-12-09 07:00"),  # after midnight: ends today
        ("2026-12-09 06:59", "2026-12-09 07:00"),
    ],
)
def test_quiet_hours_wrapping_midnight_end_at_the_next_end(now: str, end: str) -> None:
    hold = hold_for("direct", "normal", None, paris(NIGHT), at(now))
    assert hold == Hold("quiet", "quiet hours until 07:00 Europe/Paris", at(end))


@pytest.mark.parametrize("now", ["2026-12-08 07:00", "2026-12-08 12:00", "2026-12-08 21:59"])
def test_outside_quiet_hours_nothing_waits(now: str) -> None:
    assert hold_for("direct", "normal", None, paris(NIGHT), at(now)).kind == ""


def test_a_daytime_window_and_the_users_own_time_zone() -> None:
    lunch = {"start": "12:00", "end": "13:30", "allow_high": False}
    tokyo = ZoneInfo("Asia/Tokyo")
    user = {"timezone": "Asia/Tokyo", "quiet_hours": lunch}
    inside = at("2026-12-08 12:10", tokyo)
    assert hold_for("direct", "normal", None, user, inside).until == at("2026-12-08 13:30", tokyo)
    # 12:10 in Paris is 20:10 in Tokyo: outside.
    assert hold_for("direct", "normal", None, user, at("2026-12-08 12:10")).kind == ""


def test_high_priority_breaks_through_only_when_allowed() -> None:
    night = at("2026-12-08 23:00")
    assert hold_for("direct", "high", None, paris(NIGHT), night).kind == "quiet"
    allowed = paris(NIGHT | {"allow_high": True})
    assert hold_for("direct", "high", None, allowed, night) == NO_HOLD
    assert hold_for("direct", "normal", None, allowed, night).kind == "quiet"


def test_quiet_hours_across_daylight_saving_changes() -> None:
    # 2027-03-28: Paris skips 02:00-03:00. 22:00 -> 07:00 is 8 hours of real time that night.
    start = at("2027-03-27 22:00")
    end = quiet_end("22:00", "07:00", PARIS, start)
    assert end is not None and end - start == 8 * 3600
    assert datetime.fromtimestamp(end, PARIS).strftime("%H:%M") == "07:00"
    # 2026-10-25: Paris repeats 02:00-03:00. The same window is 10 hours long.
    start = at("2026-10-24 22:00")
    end = quiet_end("22:00", "07:00", PARIS, start)
    assert end is not None and end - start == 10 * 3600
    # A window ending inside the skipped hour: its end comes after the jump, not before start.
    early = quiet_end("01:00", "02:30", PARIS, at("2027-03-28 01:30"))
    assert early is not None and early > at("2027-03-28 01:30")


def test_digest_windows_are_aligned_so_a_window_shares_one_end() -> None:
    app = {"digest_s": 900}
    first = hold_for("direct", "normal", app, None, 1_800_000_010.0)
    second = hold_for("proactive", "normal", app, None, 1_800_000_890.0)
    assert first.kind == second.kind == "digest"
    assert first.until == second.until == 1_800_000_900.0
    assert first.reason == "digest until 08:15:00 UTC"
    assert hold_for("direct", "normal", app, None, 1_800_000_900.0).until == 1_800_001_800.0


def test_a_digest_ending_in_quiet_hours_waits_for_their_end() -> None:
    hold = hold_for("direct", "normal", {"digest_s": 3600}, paris(NIGHT), at("2026-12-08 21:30"))
    assert (hold.kind, hold.until) == ("quiet", at("2026-12-09 07:00"))
    hold = hold_for("direct", "normal", {"digest_s": 3600}, paris(NIGHT), at("2026-12-08 20:30"))
    assert (hold.kind, hold.until) == ("digest", at("2026-12-08 21:00"))


def run(request: NotificationRequest, **kw: Any) -> tuple[Any, list[dict[str, Any]]]:
    digest = dedupe_hash(request.app_id, request.uid, request.type, request.message)
    out = decide([request], [digest], found(**kw), LIMITS, at("2026-12-08 23:00"))
    return out, out.deliveries


def req(**kw: Any) -> NotificationRequest:
    return NotificationRequest(app_id="a1", uid="u1", message="hi", **kw)


def test_decide_mutes_without_device_deliveries_and_answers_zero_devices() -> None:
    out, deliveries = run(req(), app_preferences={("a1", "u1"): {"muted": True}})
    (result,) = out.results
    assert isinstance(result, Accepted) and result.devices == 0 and not result.duplicate
    assert [d["provider"] for d in deliveries] == ["inbox"]
    (row,) = out.notifications
    assert (row["hold"], row["hold_reason"]) == ("muted", "app muted by the user")
    assert json.loads(row["data"])["app_id"] == "a1" and out.chats  # the chat line stays


def test_decide_holds_device_deliveries_until_quiet_hours_end_inbox_now() -> None:
    out, deliveries = run(req(), user_preferences={"u1": paris(NIGHT)})
    (result,) = out.results
    assert isinstance(result, Accepted) and result.devices == 2  # they will go, later
    due = {d["provider"]: d["next_attempt_at"] for d in deliveries}
    assert due == {
        "inbox": at("2026-12-08 23:00"),
        "fcm": at("2026-12-09 07:00"),
        "apns": at("2026-12-09 07:00"),
    }
    assert out.notifications[0]["hold"] == "quiet"
    assert out.capped == []  # no cap set: nothing counted


def test_decide_lists_pushes_to_count_only_when_the_user_has_a_cap() -> None:
    out, _ = run(req(), user_preferences={"u1": paris(daily_cap=3)})
    assert out.capped == [(0, "u1")]
    out, _ = run(req(), user_preferences={"u1": paris(daily_cap=3)}, devices={})
    assert out.capped == []  # no device: no push to count
    muted = {("a1", "u1"): {"muted": True}}
    out, _ = run(req(), user_preferences={"u1": paris(daily_cap=3)}, app_preferences=muted)
    assert out.capped == []
