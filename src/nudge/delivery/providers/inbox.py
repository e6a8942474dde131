"""The in-app inbox: the notification is already stored; delivering it tells live clients."""

from __future__ import annotations

from typing import ClassVar

from nudge.bus.local import EventBus
from nudge.delivery.providers.base import Outcome, ProviderDeps, PushMessage, SendResult, Target


class InboxProvider:
    name: ClassVar[str] = "inbox"

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    @classmethod
    def from_deps(cls, deps: ProviderDeps) -> InboxProvider:
        return cls(deps.bus)

    async def send(self, message: PushMessage, target: Target) -> SendResult:
        await self.bus.publish(
            message.uid,
            {
                "id": message.notification_id,
                "app_id": message.app_id,
                "title": message.title,
                "body": message.body,
                "data": message.data,
                "created_at": message.created_at,
            },
        )
        return SendResult(Outcome.DELIVERED)

    async def aclose(self) -> None:
        return None
