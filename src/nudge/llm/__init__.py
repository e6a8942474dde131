"""The language model behind proactive notifications, built from settings.

A provider is a class with ``from_settings``, ``generate``, ``aclose`` and an ``answer_format``,
and one line in ``PROVIDERS``; :func:`nudge.llm.writer.write` is the generation step on top."""

from __future__ import annotations

from typing import Any

from nudge.config import Settings
from nudge.llm.base import LLM, Generation, LLMError
from nudge.llm.cleaning import clean_output
from nudge.llm.embedded import EmbeddedLLM
from nudge.llm.fake import FakeLLM
from nudge.llm.openai import OpenAILLM

PROVIDERS: dict[str, Any] = {"embedded": EmbeddedLLM, "openai": OpenAILLM, "fake": FakeLLM}


def build_llm(settings: Settings) -> LLM:
    """The configured provider. Raises :class:`LLMError` saying what to set when it cannot."""
    try:
        cls = PROVIDERS[settings.llm_provider]
    except KeyError:
        raise LLMError(
            f"unknown NUDGE_LLM_PROVIDER {settings.llm_provider!r}: use one of {sorted(PROVIDERS)}"
        ) from None
    llm: LLM = cls.from_settings(settings)
    return llm


__all__ = ["LLM", "Generation", "LLMError", "build_llm", "clean_output", "PROVIDERS"]
