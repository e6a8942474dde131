"""Omi's older direct endpoint (``POST /v1/integrations/notification``), an alias of the direct API:
app, user and text in the body, its checks answered as the integration endpoints answer them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from nudge.core.direct import DirectSend, Senders, refusal, send_direct
from nudge.core.notifications import Accepted, RateLimit
from nudge.errors import NudgeError
from nudge.integrations.access import authorize
from nudge.text import Line


class NotificationV1(BaseModel):
    model_config = ConfigDict(extra="ignore")
    aid: Line = Field(min_length=1, max_length=64, description="The sending app's id")
    uid: Line = Field(min_length=1, max_length=128, description="The user")
    message: str = Field(description="The notification text")


async def send_notification_v1(
    platform: Senders, authorization: str | None, idempotency_key: str | None, body: NotificationV1
) -> tuple[Accepted, RateLimit]:
    try:
        await platform.db.query(
            lambda conn: authorize(conn, authorization, body.aid, body.uid, None)
        )
        return await send_direct(
            platform,
            DirectSend(
                authorization=authorization,
                app_id=body.aid,
                uid=body.uid,
                message=body.message,
                idempotency_key=idempotency_key,
            ),
        )
    except NudgeError as exc:
        raise await refusal(platform, exc, body.aid, body.uid) from None
