"""App manifests, Omi's format, validated. A bad manifest is refused with the field named."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCOPES = ("user_name", "user_facts", "user_context", "user_chat")
Scope = Literal["user_name", "user_facts", "user_context", "user_chat"]
Capability = Literal["chat", "memories", "external_integration", "proactive_notification"]
Trigger = Literal["transcript_processed", "memory_creation"]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value


class AuthStep(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=200)
    url: str

    _check_url = field_validator("url")(_http_url)


class ExternalIntegration(BaseModel):
    model_config = ConfigDict(extra="ignore")
    triggers_on: Trigger
    webhook_url: str
    setup_completed_url: str | None = None
    auth_steps: list[AuthStep] = Field(default_factory=list, max_length=20)

    _check_webhook = field_validator("webhook_url")(_http_url)

    @field_validator("setup_completed_url")
    @classmethod
    def _check_setup(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)


class ProactiveNotification(BaseModel):
    model_config = ConfigDict(extra="ignore")
    scopes: list[Scope] = Field(default_factory=list)

    @field_validator("scopes")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class Manifest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=5000)
    capabilities: list[Capability] = Field(default_factory=list)
    external_integration: ExternalIntegration | None = None
    proactive_notification: ProactiveNotification | None = None

    @field_validator("name")
    @classmethod
    def _name_printable(cls, value: str) -> str:
        value = value.strip()
        if not value or any(ord(c) < 32 for c in value):
            raise ValueError("must be non-empty printable text")
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
            if "external_integration" not in caps or self.external_integration is None:
                raise ValueError(
                    "capabilities: 'proactive_notification' needs 'external_integration' "
                    "(the webhook that receives transcripts)"
                )
        return self

    @property
    def proactive_scopes(self) -> list[str]:
        if "proactive_notification" not in self.capabilities or not self.proactive_notification:
            return []
        return list(self.proactive_notification.scopes)
