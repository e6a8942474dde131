"""Shortening a push payload to a provider's limit: as little as needed, never mid-character."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from nudge.delivery.providers.base import PushMessage
from nudge.delivery.providers.payload import (
    ELLIPSIS,
    collapse_id,
    compact_json,
    cut_text,
    fit,
    topic,
)
from tests.delivery.conftest import push_message


def size(m: PushMessage) -> int:
    return len(compact_json({"title": m.title, "body": m.body, "data": m.data}))


PIECES = st.text(st.characters(exclude_categories=["Cs"]), max_size=20) | st.sampled_from(
    ["👍🏽", "👨‍👩‍👧", "🇫🇷", "é", "é", " "]
)
TEXT = st.lists(PIECES, max_size=300).map("".join)


@settings(max_examples=200, deadline=None)
@given(body=TEXT, limit=st.integers(min_value=300, max_value=4096))
def test_fit_keeps_within_the_limit_and_cuts_as_little_as_possible(body: str, limit: int) -> None:
    message = push_message(body=body)
    fitted = fit(message, size, limit)
    assert size(fitted) <= limit
    if size(message) <= limit:
        assert fitted == message
        return
    assert fitted.body.endswith(ELLIPSIS)
    kept = fitted.body[: -len(ELLIPSIS)]
    assert body.startswith(kept)
    # Never cut before a character that belongs to the previous one.
    rest = body[len(kept) :]
    if rest and kept and not rest[0].isspace():
        assert unicodedata.combining(rest[0]) == 0
        assert rest[0] not in "\u200d\ufe0f" and kept[-1] != "\u200d"
        assert not 0x1F3FB <= ord(rest[0]) <= 0x1F3FF


def test_cut_text_keeps_emoji_sequences_and_flags_whole() -> None:
    assert cut_text("ab👍🏽cd", 3) == "ab" + ELLIPSIS  # not "ab👍"
    assert cut_text("ab👨‍👩‍👧cd", 4) == "ab" + ELLIPSIS
    assert cut_text("🇫🇷🇩🇪", 3) == "🇫🇷" + ELLIPSIS  # not half a German flag
    assert cut_text("cafe\u0301 au lait", 4) == "caf" + ELLIPSIS
    assert cut_text("short", 10) == "short"


def test_app_data_goes_before_the_title_when_a_body_alone_cannot_make_it_fit() -> None:
    message = push_message(body="hello " * 100)
    message.data.update({"big": "x" * 3000, "small": "y"})
    fitted = fit(message, size, 1200)
    assert size(fitted) <= 1200
    assert "big" not in fitted.data and fitted.data["small"] == "y"
    assert fitted.data["notification_id"] == message.notification_id
    assert fitted.title == message.title and fitted.body.startswith("hello")


def test_collapse_ids_and_topics_are_valid_header_values() -> None:
    hex_key = "0123456789abcdef" * 2
    assert collapse_id(hex_key) == hex_key and topic(hex_key) == hex_key
    long_key = "ключ" * 40
    assert collapse_id(long_key).isascii() and len(collapse_id(long_key)) == 64
    assert collapse_id(long_key) == collapse_id(long_key)  # equal keys still collapse
    assert len(topic("not/a:topic" * 5)) == 32 and topic("a+b") == topic("a+b")
