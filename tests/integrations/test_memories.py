"""Finding memories in a text: what the LLM says is kept only when it is about the text, and the
text's own sentences stand in when the LLM fails."""

from __future__ import annotations

from nudge.integrations.memories import extract, parse_extraction, sentences
from nudge.llm import LLMError
from nudge.llm.fake import FakeLLM

TEXT = "Your flight to Paris is confirmed for May 15th. Hotel de Paris: May 16-20."


def test_parse_keeps_facts_about_the_text_without_list_marks_or_repeats() -> None:
    output = (
        "1. User flies to Paris on May 15th.\n"
        '* "User stays at Hotel de Paris."\n'
        "- User flies to Paris on May 15th.\n"
        "Remember to drink water every day!\n"
        "NONE\n"
        "ok\n"
    )
    assert parse_extraction(output, TEXT) == [
        "User flies to Paris on May 15th.",
        "User stays at Hotel de Paris.",
    ]


def test_parse_of_none_is_nothing() -> None:
    assert parse_extraction("NONE.", TEXT) == []


def test_sentences_keep_those_of_a_few_words() -> None:
    assert sentences("I moved to Lisbon. Ok! Yes.\nMy sister lives in Porto") == [
        "I moved to Lisbon.",
        "My sister lives in Porto",
    ]


async def test_extract_uses_the_llm_then_falls_back() -> None:
    llm = FakeLLM(reply=lambda system, prompt: "User flies to Paris on May 15th.")
    assert await extract(llm, TEXT, "email") == (["User flies to Paris on May 15th."], "llm")

    def down(system: str, prompt: str) -> str:
        raise LLMError("down")

    facts, how = await extract(FakeLLM(reply=down), TEXT, "email")
    assert how == "sentences" and facts == sentences(TEXT)
    assert facts == [
        "Your flight to Paris is confirmed for May 15th.",
        "Hotel de Paris: May 16-20.",
    ]
    assert await extract(None, TEXT, "email") == (facts, "sentences")
