"""Cleaning model output into a notification: whole sentences, no markup, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nudge.llm.cleaning import clean_output


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Take a short walk before the meeting.", "Take a short walk before the meeting."),
        ('"Drink water now."', "Drink water now."),
        ("Notification: Stretch your legs.", "Stretch your legs."),
        ("SPEAKER_01: Ask for the budget first.", "Ask for the budget first."),
        (
            "The advice to the user is: \"Don't give up. Small steps count.",
            "Don't give up. Small steps count.",
        ),
        ("My tip: Soak the rice first.", "Soak the rice first."),
        ("Advice is the best gift: take it.", "Advice is the best gift: take it."),
        (
            "- Prepare one question.\n- Bring the numbers.",
            "Prepare one question. Bring the numbers.",
        ),
        ("1. Breathe.\n2. Smile.", "Breathe. Smile."),
        ("**Slow down** and listen.", "Slow down and listen."),
        ("Rest today. Rest today. Rest today.", "Rest today."),
        ("Plan the week. Then start with the hardest", "Plan the week."),
        ("<think>hmm</think>Call your mom tonight.", "Call your mom tonight."),
        ("Focus on sleep.)", "Focus on sleep."),
        ("What now? , then rest.", "What now?, then rest."),
        ("SKIP", ""),
        ("Nothing.", ""),
        ("   ", ""),
        ("<|im_end|>", ""),
    ],
)
def test_examples(raw: str, clean: str) -> None:
    assert clean_output(raw) == clean


def test_length_bound_keeps_whole_sentences() -> None:
    raw = " ".join(f"Sentence number {i} is here." for i in range(40))
    out = clean_output(raw, max_chars=100)
    assert len(out) <= 100 and out.endswith(".")
    assert out.startswith("Sentence number 0 is here.")
    long_one = "word " * 200
    cut = clean_output(long_one, max_chars=50)
    assert len(cut) <= 50 and cut.endswith("…")


@given(st.text(max_size=2000))
def test_any_output_is_bounded_single_line(raw: str) -> None:
    out = clean_output(raw, max_chars=300)
    assert len(out) <= 300
    assert "\n" not in out and out == out.strip()
    assert all(c.isprintable() for c in out)
