"""Acceptance's decisions without a database: secret, target, repeats, hourly windows, order."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from nudge.core.notifications import (
    HOUR,
    Accepted,
    Limits,
    NotificationRequest,
    RateLimit,
    Window,
    check_sender,
    check_target,
    decide,
    dedupe_hash,
    hourly_limit,
    repeat_of,
    take_slot,
    windowed,
)
from nudge.errors import Invalid, NotFound, NudgeError, RateLimited, Unauthorized
from nudge.store.notifications import Found

NOW = 1_800_000_000.0
LIMITS = Limits(default_per_hour=2, dedupe_window_s=60, message_per_hour=1)


def req(message: str = "hi", **kw: object) -> NotificationRequest:
    return NotificationRequest(app_id=kw.pop("app_id", "a1"), uid="u1", message=message, **kw)  # type: ignore[arg-type]


def found(**kw: object) -> Found:
    values: dict[str, object] = {
        "owners": {"key-a1": "a1", "key-a2": "a2", "revoked": None},
        "apps": {"a1": SimpleNamespace(name="Coach", direct_limit_per_hour=None)},
        "installed": {("a1", "u1")},
        "devices": {"u1": {"dev1": "fcm", "dev2": "apns"}},
        "users": set(),
        "app_preferences": {("a1", "u1"): None},
        "user_preferences": {"u1": None},
        "by_key": {},
        "recent": {},
        "windows": {},
    }
    return Found(**(values | kw))  # type: ignore[arg-type]


def run(requests: list[NotificationRequest], **kw: object) -> list[Accepted | NudgeError]:
    digests = [dedupe_hash(r.app_id, r.uid, r.type, r.message) for r in requests]
    return decide(requests, digests, found(**kw), LIMITS, NOW).results


def test_secret_must_be_a_live_key_of_the_app() -> None:
    owners = {"key-a1": "a1", "key-a2": "a2", "revoked": None}
    check_sender(req(key_hash="key-a1"), owners)
    check_sender(req(key_hash=None), owners)  # trusted callers (pipeline, admin)
    with pytest.raises(Unauthorized, match="unknown or revoked"):
        check_sender(req(key_hash="revoked"), owners)
    with pytest.raises(Unauthorized, match="unknown or revoked"):
        check_sender(req(key_hash="nobody"), owners)
    with pytest.raises(Unauthorized, match="belongs to another app, not 'a1'"):
        check_sender(req(key_hash="key-a2"), owners)


def test_target_tells_unknown_app_user_and_missing_install_apart() -> None:
    assert check_target(req(), found()).name == "Coach"
    with pytest.raises(NotFound, match="app 'a9' not found"):
        check_target(req(app_id="a9"), found())
    with pytest.raises(NotFound, match="user 'u1' not found"):
        check_target(req(), found(installed=set()))
    with pytest.raises(NotFound, match="has not installed app 'a1'"):
        check_target(req(), found(installed=set(), users={"u1"}))


def test_a_repeat_is_found_by_idempotency_key_first_then_by_message() -> None:
    by_key, recent = {("a1", "k"): "n_key"}, {"digest": "n_msg"}
    assert repeat_of(req(idempotency_key="k"), "digest", by_key, recent) == "n_key"
    assert repeat_of(req(idempotency_key="other"), "digest", by_key, recent) == "n_msg"
    assert repeat_of(req(), "digest", by_key, recent) == "n_msg"
    assert repeat_of(req(), "new", by_key, recent) is None


def test_hourly_limits_per_kind() -> None:
    assert hourly_limit(req(kind="direct"), None, LIMITS) == 2
    assert hourly_limit(req(kind="direct"), 7, LIMITS) == 7  # the app's own limit
    assert hourly_limit(req(kind="message"), 7, LIMITS) == 1
    assert hourly_limit(req(kind="proactive"), 7, LIMITS) == 0
    no_cap = Limits(2, 60, message_per_hour=0)
    kinds = [req(kind=k) for k in ("direct", "message", "proactive")]
    assert windowed(kinds, LIMITS) == {("direct", "a1", "u1"), ("message", "a1", "u1")}
    assert windowed(kinds, no_cap) == {("direct", "a1", "u1")}


def test_a_slot_is_taken_until_the_window_is_full() -> None:
    window = Window(used=0, oldest=None)
    first = take_slot(window, 2, "direct", NOW)
    # Counted in the minute bucket starting at NOW: it leaves the window an hour after the
    # bucket ends.
    assert (first.limit, first.remaining, first.reset) == (2, 1, HOUR + 60)
    assert take_slot(window, 2, "direct", NOW + 10).remaining == 0
    with pytest.raises(RateLimited) as refused:
        take_slot(window, 2, "direct", NOW + 600)
    assert refused.value.retry_after == 3060
    assert refused.value.headers["X-RateLimit-Remaining"] == "0"
    with pytest.raises(RateLimited, match="webhook message answers"):
        take_slot(Window(1, NOW), 1, "message", NOW)


def test_a_batch_is_decided_in_order_and_sees_its_own_earlier_requests() -> None:
    invalid = Invalid("message: must not be empty")
    results = run(
        [
            req("one", key_hash="key-a1", idempotency_key="k1"),
            req("one"),  # the same message again: the first's result
            req("two", idempotency_key="k1"),  # the same key: the first's result
            req("three"),
            req("four"),  # over the hourly limit of 2
            req("bad", key_hash="revoked", invalid=invalid),  # the secret is answered first
            req("bad", invalid=invalid),
            req("p", kind="proactive"),  # no hourly window
        ]
    )
    first, again, by_key, third, limited, secret, bad, proactive = results
    assert isinstance(first, Accepted) and not first.duplicate and first.devices == 2
    assert first.rate_limit is not None and first.rate_limit.remaining == 1
    # A repeat takes no slot; it is answered with the window's state (no read after the batch).
    assert again == by_key == Accepted(first.notification_id, -1, True, first.rate_limit)
    assert isinstance(third, Accepted) and third.rate_limit and third.rate_limit.remaining == 0
    assert isinstance(limited, RateLimited)
    assert isinstance(secret, Unauthorized)
    assert bad is invalid
    assert isinstance(proactive, Accepted) and proactive.rate_limit is None


def test_only_accepted_requests_make_rows() -> None:
    requests = [req("hello", type="tip", data={"k": "v"}), req("x", app_id="a9")]
    digests = [dedupe_hash(r.app_id, r.uid, r.type, r.message) for r in requests]
    decision = decide(requests, digests, found(), LIMITS, NOW)
    (note,) = decision.notifications
    accepted = decision.results[0]
    assert isinstance(accepted, Accepted) and note["id"] == accepted.notification_id
    assert note["title"] == "Coach says" and note["created_at"] == NOW
    assert json.loads(note["data"]) == {
        "k": "v",
        "app_id": "a1",
        "notification_id": note["id"],
        "type": "tip",
        "navigate_to": "/chat/a1",
    }
    assert sorted((d["provider"], d["device_id"]) for d in decision.deliveries) == [
        ("apns", "dev2"),
        ("fcm", "dev1"),
        ("inbox", None),
    ]
    assert [c["text"] for c in decision.chats] == ["hello"]
    assert isinstance(decision.results[1], NotFound)


def test_stored_windows_and_repeats_count() -> None:
    oldest = NOW - HOUR + 30
    full = {("direct", "a1", "u1"): (2, oldest)}
    (limited,) = run([req()], windows=full)
    assert isinstance(limited, RateLimited) and limited.retry_after == 30
    (repeat,) = run([req()], recent={dedupe_hash("a1", "u1", "", "hi"): "n_old"})
    assert isinstance(repeat, Accepted) and repeat.duplicate
    assert repeat.notification_id == "n_old"
    assert repeat.rate_limit == RateLimit(2, 2, 0)  # an empty window
    # A repeat is answered even when the window is full, with its state.
    (repeat,) = run([req()], windows=full, recent={dedupe_hash("a1", "u1", "", "hi"): "n_old"})
    assert isinstance(repeat, Accepted) and repeat.rate_limit == RateLimit(2, 0, 30)
