"""A deterministic stand-in for tests and benchmarks: it echoes the prompt it was given.

Echoing makes what the model saw visible in the notification (tests check that only granted
context reached it); ``latency_s`` simulates generation time; ``reply`` scripts other answers.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable
from typing import ClassVar

from nudge.config import Settings
from nudge.llm.base import Generation


def echo(system: str, prompt: str) -> str:
    return "Noted: " + re.sub(r"\s+", " ", prompt).strip()


class FakeLLM:
    name: ClassVar[str] = "fake"

    def __init__(
        self, latency_s: float = 0.0, reply: Callable[[str, str], str] = echo, keep: int = 100
    ) -> None:
        self.latency_s = latency_s
        self.reply = reply
        self.calls: deque[tuple[str, str]] = deque(maxlen=keep)

    @classmethod
    def from_settings(cls, settings: Settings) -> FakeLLM:
        return cls(latency_s=settings.llm_fake_latency_s)

    async def generate(self, system: str, prompt: str) -> Generation:
        started = time.monotonic()
        self.calls.append((system, prompt))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return Generation(self.reply(system, prompt), "fake-echo", time.monotonic() - started)

    async def aclose(self) -> None:
        return None
