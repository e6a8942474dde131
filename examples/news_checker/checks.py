"""The news checker's built-in knowledge: a few well-known myths (answered directly with a
correction) and news topics and claim markers (handed to the platform's LLM to check)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Myth:
    key: str
    phrases: tuple[str, ...]
    correction: str


MYTHS = (
    Myth(
        "great-wall",
        (
            "great wall of china is visible from space",
            "great wall is visible from space",
            "see the great wall from space",
        ),
        "Fact check: the Great Wall of China is not visible to the naked eye from orbit; "
        "it is long but only a few metres wide.",
    ),
    Myth(
        "ten-percent-brain",
        (
            "use 10% of our brain",
            "use 10 percent of our brain",
            "use ten percent of our brain",
            "use 10% of your brain",
            "use ten percent of your brain",
        ),
        "Fact check: we use virtually all of our brain; brain scans show activity throughout, "
        "even during sleep.",
    ),
    Myth(
        "goldfish-memory",
        (
            "goldfish have a three second memory",
            "goldfish have a 3 second memory",
            "goldfish only remember three seconds",
        ),
        "Fact check: goldfish remember things for months; they can be trained to respond to "
        "sounds and colours.",
    ),
    Myth(
        "lightning-twice",
        ("lightning never strikes the same place twice",),
        "Fact check: lightning often strikes the same place twice; the Empire State Building "
        "is hit about 20 times a year.",
    ),
)

TOPICS: dict[str, tuple[str, ...]] = {
    "elections": ("election", "elections", "ballot", "ballots", "voter fraud", "polling"),
    "public health": ("vaccine", "vaccines", "vaccination", "pandemic", "outbreak"),
    "climate": ("climate change", "global warming", "carbon emissions", "sea level"),
    "the economy": ("inflation", "interest rates", "recession", "unemployment", "stock market"),
    "technology": ("artificial intelligence", "chatgpt", "large language model", "5g"),
}

CLAIM_MARKERS = (
    "studies show",
    "research shows",
    "scientists say",
    "according to",
    "statistics show",
    "it's a fact that",
    "it is a fact that",
    "i read that",
)
