"""The app-disable policy, without a database: what one webhook call changes in its app's health."""

from __future__ import annotations

from nudge.proactive.health import disable_reason, health_change

DAY = 86_400.0


def test_a_working_webhook_clears_a_failing_mark_once() -> None:
    assert health_change(True, 100.0, 200.0, DAY) == "recovered"
    assert health_change(True, None, 200.0, DAY) is None  # nothing to write


def test_the_first_failure_is_remembered_later_ones_wait_for_the_limit() -> None:
    assert health_change(False, None, 200.0, DAY) == "failing"
    assert health_change(False, 200.0, 200.0 + DAY - 1, DAY) is None


def test_an_app_failing_for_the_whole_limit_is_disabled() -> None:
    assert health_change(False, 200.0, 200.0 + DAY, DAY) == "disable"
    assert health_change(False, 200.0, 200.0 + 3 * DAY, DAY) == "disable"


def test_the_reason_says_what_failed_since_when_and_how_to_re_enable() -> None:
    reason = disable_reason("app_1", "https://a.example/hook", 0.0, DAY, "timeout")
    assert reason == (
        "disabled at 1970-01-02T00:00:00+00:00: its webhook has failed since "
        "1970-01-01T00:00:00+00:00 (last error: timeout). Fix https://a.example/hook, then "
        "re-enable the app with POST /v1/apps/app_1/enable"
    )
