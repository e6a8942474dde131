"""A deterministic stand-in for tests and benchmarks: it echoes the prompt it was given.

Echoing makes what the model saw visible in the notification (tests check that only granted
context reached it). With ``verbatim`` (the default) the generation step delivers the answer as it
is, markup and length aside; ``verbatim=False`` puts it through every check."""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from nudge.config import Settings
from nudge.llm.base import Generation


def echo(system: str, prompt: str) -> str:
    return "Noted: " + re.sub(r"\s+", " ", prompt).strip()


class FakeLLM:
    name: ClassVar[str] = "fake"
    answer_format: ClassVar[Literal["json", "text"]] = "text"

    def __init__(
        self,
        latency_s: float = 0.0,
        reply: Callable[[str, str], str] = echo,
        keep: int = 100,
        verbatim: bool = True,
    ) -> None:
        self.latency_s = latency_s
        self.reply = reply
        self.verbatim = verbatim
        self.calls: deque[tuple[str, str]] = deque(maxlen=keep)

    @classmethod
    def from_settings(cls, settings: Settings) -> FakeLLM:
        return cls(latency_s=settings.llm_fake_latency_s)

    async def generate(
        self, system: str, prompt: str, *, schema: dict[str, Any] | None = None, variant: int = 0
    ) -> Generation:
        started = time.monotonic()
        self.calls.append((system, prompt))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return Generation(self.reply(system, prompt), "fake-echo", time.monotonic() - started)

    async def aclose(self) -> None:
        return None
