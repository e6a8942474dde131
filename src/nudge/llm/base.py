"""The LLM interface: one ``generate`` call, one result type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

VARIANT_TEMPERATURE = 0.25  # added per retry (``variant``): another try should not repeat the last


class LLMError(Exception):
    """Generation failed (server down, timeout, model missing); the message says what to do."""


@dataclass(frozen=True)
class Generation:
    text: str  # the raw output, before cleaning
    model: str
    seconds: float


class LLM(Protocol):
    name: ClassVar[str]
    # The generation step's answer form for NUDGE_LLM_ANSWER=auto (see nudge.llm.writer).
    answer_format: ClassVar[Literal["json", "text"]]

    async def generate(
        self, system: str, prompt: str, *, schema: dict[str, Any] | None = None, variant: int = 0
    ) -> Generation:
        """Answer ``prompt`` under the ``system`` instructions; with ``schema``, as JSON matching
        it where the provider can enforce that. ``variant`` > 0 asks for another sample (another
        seed, a little more temperature). Raises :class:`LLMError`."""
        ...

    async def aclose(self) -> None: ...
