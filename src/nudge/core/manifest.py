"""App manifests, Omi's format, validated. A bad manifest is refused with the field named."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nudge.sdk.models import SCOPES as SCOPES
from nudge.text import Line, Text

Scope = Literal["user_name", "user_facts", "user_context", "user_chat"]
Capability = Literal["chat", "memories", "external_integration", "proactive_notification"]
Trigger = Literal["transcript_processed", "memory_creation"]
# Omi's integration actions (``external_integration.actions``): its ActionType names, plus the
# aliases its gates also accept (``create_memories`` and ``read_facts``). ``read_tasks`` is
# accepted so that Omi manifests load; Nudge has no tasks endpoint for it to open.
Action = Literal[
    "create_conversation",
    "create_memories",
    "create_facts",
    "read_memories",
    "read_facts",
    "read_conversations",
    "read_tasks",
]
# What each endpoint checks, and the action names that grant it (as Omi's app_can_* gates).
ACTION_GRANTS: dict[str, tuple[str, ...]] = {
    "create_conversation": ("create_conversation",),
    "create_memories": ("create_memories", "create_facts"),
    "read_memories": ("read_memories", "read_facts"),
    "read_conversations": ("read_conversations",),
}


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value


class AuthStep(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: Line = Field(min_length=1, max_length=200)
    url: Line

    _check_url = field_validator("url")(_http_url)


class IntegrationAction(BaseModel):
    """One entry of ``external_integration.actions``, Omi's shape: ``{"action": NAME}``."""

    model_config = ConfigDict(extra="ignore")
    action: Action


class ExternalIntegration(BaseModel):
    """Webhooks (``triggers_on`` + ``webhook_url``), the integration API (``actions``), or both:
    an app that only imports data needs no webhook."""

    model_config = ConfigDict(extra="ignore")
    triggers_on: Trigger | None = None
    webhook_url: Line | None = None
    setup_completed_url: Line | None = None
    auth_steps: list[AuthStep] = Field(default_factory=list, max_length=20)
    actions: list[IntegrationAction] = Field(default_factory=list, max_length=20)

    @field_validator("webhook_url", "setup_completed_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @model_validator(mode="after")
    def _webhook_or_actions(self) -> ExternalIntegration:
        if (self.triggers_on is None) != (self.webhook_url is None):
            missing = "webhook_url" if self.webhook_url is None else "triggers_on"
            raise ValueError(f"{missing}: triggers_on and webhook_url go together (the webhook)")
        if self.triggers_on is None and not self.actions:
            raise ValueError(
                "external_integration: needs triggers_on and webhook_url (webhooks), "
                "or actions (the integration API), or both"
            )
        return self


class ProactiveNotification(BaseModel):
    model_config = ConfigDict(extra="ignore")
    scopes: list[Scope] = Field(default_factory=list)

    @field_validator("scopes")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class Manifest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: Line = Field(min_length=1, max_length=100)
    description: Text = Field(default="", max_length=5000)
    capabilities: list[Capability] = Field(default_factory=list)
    external_integration: ExternalIntegration | None = None
    proactive_notification: ProactiveNotification | None = None

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be blank")
        return value

    @model_validator(mode="after")
    def _capabilities_match(self) -> Manifest:
        caps = set(self.capabilities)
        if "external_integration" in caps and self.external_integration is None:
            raise ValueError(
                "external_integration: required when capabilities include 'external_integration'"
            )
        if "proactive_notification" in caps:
            if self.proactive_notification is None:
                raise ValueError(
                    "proactive_notification: required when capabilities include "
                    "'proactive_notification'"
                )
            integration = self.external_integration
            if "external_integration" not in caps or integration is None:
                raise ValueError(
                    "capabilities: 'proactive_notification' needs 'external_integration' "
                    "(the webhook that receives transcripts)"
                )
            if integration.webhook_url is None:
                raise ValueError(
                    "external_integration: 'proactive_notification' needs a webhook "
                    "(triggers_on and webhook_url)"
                )
        return self

    def allows(self, action: str) -> bool:
        """Omi's gate: the manifest lists an action that grants ``action`` (see ACTION_GRANTS).
        Like Omi, only ``external_integration.actions`` counts, not ``capabilities``."""
        if self.external_integration is None:
            return False
        listed = {a.action for a in self.external_integration.actions}
        return any(name in listed for name in ACTION_GRANTS[action])

    @property
    def proactive_scopes(self) -> list[str]:
        if "proactive_notification" not in self.capabilities or not self.proactive_notification:
            return []
        return list(self.proactive_notification.scopes)
