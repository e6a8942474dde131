"""Any OpenAI-compatible chat server: OpenAI, vLLM, Ollama, llama.cpp's server (``base_url``).

A JSON schema goes as ``response_format``; a server that refuses it (400, 422, or an error naming
``response_format``: llama-cpp-python's server answers 500) is asked again without, from then on."""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar, Literal

import openai

from nudge.config import Settings
from nudge.llm.base import VARIANT_TEMPERATURE, Generation, LLMError

log = logging.getLogger("nudge.llm")


class OpenAILLM:
    name: ClassVar[str] = "openai"
    answer_format: ClassVar[Literal["json", "text"]] = "json"

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None,
        api_key: str | None,
        timeout_s: float,
        max_retries: int,
        max_tokens: int,
        temperature: float,
    ) -> None:
        self.model = model
        self.structured = True  # until the server refuses response_format
        self.max_tokens = max_tokens
        self.temperature = temperature
        # Local servers take any key; the client insists on one.
        self.client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",
            timeout=timeout_s,
            max_retries=max_retries,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAILLM:
        if not settings.llm_base_url and not settings.llm_api_key:
            raise LLMError(
                "NUDGE_LLM_PROVIDER=openai needs NUDGE_LLM_API_KEY (OpenAI) or NUDGE_LLM_BASE_URL "
                "(vLLM, Ollama, llama.cpp server: e.g. http://127.0.0.1:8080/v1)"
            )
        return cls(
            model=settings.llm_model,
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key,
            timeout_s=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
            max_tokens=settings.llm_max_tokens,
            temperature=settings.llm_temperature,
        )

    async def generate(
        self, system: str, prompt: str, *, schema: dict[str, Any] | None = None, variant: int = 0
    ) -> Generation:
        started = time.monotonic()
        messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        try:
            try:
                completion = await self._create(
                    messages, schema if self.structured else None, variant
                )
            except openai.APIStatusError as exc:
                if not (schema and self.structured and _refuses_format(exc)):
                    raise
                self.structured = False
                log.warning(
                    "LLM server refused response_format json_schema: free text from now on",
                    extra={"model": self.model, "error": str(exc.message)[:200]},
                )
                completion = await self._create(messages, None, variant)
        except openai.APIStatusError as exc:
            raise LLMError(
                f"LLM server answered {exc.status_code} for model {self.model!r}: "
                f"{str(exc.message)[:300]}"
            ) from None
        except openai.APIError as exc:  # connection errors, timeouts (after the retries)
            raise LLMError(
                f"LLM server unreachable ({type(exc).__name__}: {str(exc)[:200]}); "
                "check NUDGE_LLM_BASE_URL"
            ) from None
        if not completion.choices:
            raise LLMError("LLM server answered without choices")
        text = completion.choices[0].message.content or ""
        return Generation(text, completion.model or self.model, time.monotonic() - started)

    async def _create(
        self, messages: list[Any], schema: dict[str, Any] | None, variant: int
    ) -> Any:
        extra: dict[str, Any] = {}
        if variant:  # another sample than the last try's
            extra["seed"] = variant
        if schema:
            extra["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            }
        return await self.client.chat.completions.create(
            model=self.model,
            messages=messages,
            max_tokens=self.max_tokens,
            temperature=min(self.temperature + VARIANT_TEMPERATURE * variant, 1.0),
            **extra,
        )

    async def aclose(self) -> None:
        await self.client.close()


def _refuses_format(exc: openai.APIStatusError) -> bool:
    return exc.status_code in (400, 422) or "response_format" in str(exc.message)
