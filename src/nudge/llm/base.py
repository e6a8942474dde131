"""The LLM interface: one ``generate`` call, one result type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol


class LLMError(Exception):
    """Generation failed (server down, timeout, model missing); the message says what to do."""


@dataclass(frozen=True)
class Generation:
    text: str  # the raw output, before cleaning
    model: str
    seconds: float


class LLM(Protocol):
    name: ClassVar[str]

    async def generate(self, system: str, prompt: str) -> Generation:
        """Answer ``prompt`` under the ``system`` instructions. Raises :class:`LLMError`."""
        ...

    async def aclose(self) -> None: ...
