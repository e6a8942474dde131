"""A development provider: writes each push to the log instead of a device."""

from __future__ import annotations

import logging
from typing import ClassVar

from nudge.delivery.providers.base import Outcome, ProviderDeps, PushMessage, SendResult, Target

log = logging.getLogger("nudge.push.log")


class LogProvider:
    name: ClassVar[str] = "log"

    @classmethod
    def from_deps(cls, deps: ProviderDeps) -> LogProvider:
        return cls()

    async def send(self, message: PushMessage, target: Target) -> SendResult:
        log.info(
            "push",
            extra={
                "notification_id": message.notification_id,
                "uid": message.uid,
                "device_id": target.device_id,
                "title": message.title,
                "body": message.body,
            },
        )
        return SendResult(Outcome.DELIVERED)

    async def aclose(self) -> None:
        return None
