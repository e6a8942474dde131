"""Cleaning model output into a notification: at most two whole sentences, no markup, no
preamble or talk about itself, nothing copied from the prompt, bounded; every removal noted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nudge.llm.cleaning import clean_output, plain


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
        (
            "Here's a rewritten version of the advice: \"Ice your knee tonight. Rest tomorrow.",
            "Ice your knee tonight. Rest tomorrow.",
        ),
        (
            "Sure, here's a short tip: Stretch your calves after runs.",
            "Stretch your calves after runs.",
        ),
        ("To the user: Drink water before bed.", "Drink water before bed."),
        ("Eat right; 2. Sleep early!", "Eat right; Sleep early!"),
        (
            "Take a break. Walk ten minutes. Drink water. Call a friend.",
            "Take a break. Walk ten minutes.",
        ),
        ("<SYS>> Call your sister tonight.", "Call your sister tonight."),
        ("You, you. Rest your knee today.", "Rest your knee today."),
        ("I'm sorry for the confusion. I'll provide you with two short sentences to help c", ""),
        (
            'The advice to "Don\'t miss out on the opportunity to train" is a great one.',
            "",
        ),
        ("You're a helpful mentor for Ravi. Talk to Arjun tonight.", "Talk to Arjun tonight."),
        ("Book the table. I'm always happy to help, just let me know.", "Book the table."),
        ("You, Leo, are a travel buddy. Pack your passport.", "Pack your passport."),
        (
            "As a helpful mentor, I'm here to offer guidance. Rest your knee this week.",
            "Rest your knee this week.",
        ),
        ("You can ask your buddy to run with you.", "You can ask your buddy to run with you."),
        ("You're right, I'm not sure what to recommend. Take your pills.", "Take your pills."),
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
    assert clean_output(raw).text == clean


def test_each_removal_says_what_and_why() -> None:
    prompt = "You are a helpful mentor for Ana. Based on her goals (Wants to run a marathon)"
    raw = 'Sure! Here is the advice: "Based on her goals (Wants to run a marathon), rest. Ice it.'
    cleaned = clean_output(raw, prompt=prompt)
    assert cleaned.text == "Ice it."
    why = {r.why for r in cleaned.removed}
    assert {"preamble", "quotes", "copies 35+ characters of the prompt"} <= why
    copied = [r.text for r in cleaned.removed if r.why.startswith("copies")]
    assert copied == ["Based on her goals (Wants to run a marathon), rest."]
    assert {"text": "Sure!", "why": "preamble"} in cleaned.removed_as_dicts()


def test_dialogue_the_model_goes_on_with_is_dropped() -> None:
    raw = (
        "Emma: Ask Joe about his agency.\nUser: Thanks!\nSPEAKER_01: Sure.\n"
        "Facts: Project manager\nJoe: Hi."
    )
    cleaned = clean_output(raw)
    assert cleaned.text == "Ask Joe about his agency."
    dropped = [r.text for r in cleaned.removed if r.why == "a line of dialogue or of the prompt"]
    assert dropped == ["User: Thanks!", "SPEAKER_01: Sure.", "Facts: Project manager", "Joe: Hi."]


def test_plain_keeps_the_text_without_markup() -> None:
    assert plain("Noted: <user_name>Ana</user_name> <|im_end|>  ok") == "Noted: Ana ok"
    assert plain("goals (<user_facts>Runs</user_facts>).") == "goals (Runs)."
    assert plain("word " * 100, 30).endswith("…") and len(plain("word " * 100, 30)) <= 30


def test_length_bound_keeps_whole_sentences() -> None:
    raw = " ".join(f"Sentence number {i} is here." for i in range(40))
    out = clean_output(raw, max_chars=100).text
    assert len(out) <= 100 and out.endswith(".")
    assert out.startswith("Sentence number 0 is here.")
    long_one = "word " * 200
    cut = clean_output(long_one, max_chars=50).text
    assert len(cut) <= 50 and cut.endswith("…")


@given(st.text(max_size=2000))
def test_any_output_is_bounded_single_line(raw: str) -> None:
    out = clean_output(raw, max_chars=300).text
    assert len(out) <= 300
    assert "\n" not in out and out == out.strip()
    assert all(c.isprintable() for c in out)
