"""Manifests with Omi's ``external_integration.actions``: which names load, what each grants."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nudge.api.errors import describe_validation
from nudge.core.manifest import ACTION_GRANTS, Manifest


def manifest(integration: dict[str, Any], caps: list[str] | None = None) -> dict[str, Any]:
    return {
        "name": "Importer",
        "capabilities": caps or ["external_integration"],
        "external_integration": integration,
    }


def refusal(body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        Manifest.model_validate(body)
    return describe_validation(list(caught.value.errors()))


def test_import_only_app_needs_no_webhook() -> None:
    parsed = Manifest.model_validate(
        manifest({"actions": [{"action": "create_conversation"}, {"action": "read_memories"}]})
    )
    assert parsed.allows("create_conversation")
    assert parsed.allows("read_memories")
    assert not parsed.allows("create_memories")
    assert not parsed.allows("read_conversations")
    assert "webhook_url" not in parsed.model_dump(exclude_none=True)["external_integration"]


@pytest.mark.parametrize(
    ("listed", "grants"),
    [
        ("create_facts", "create_memories"),  # Omi's older name
        ("create_memories", "create_memories"),
        ("read_facts", "read_memories"),
        ("read_memories", "read_memories"),
        ("read_conversations", "read_conversations"),
        ("create_conversation", "create_conversation"),
    ],
)
def test_each_action_grants_only_its_endpoint(listed: str, grants: str) -> None:
    parsed = Manifest.model_validate(manifest({"actions": [{"action": listed}]}))
    assert [gate for gate in ACTION_GRANTS if parsed.allows(gate)] == [grants]


def test_read_tasks_loads_but_opens_nothing() -> None:
    parsed = Manifest.model_validate(manifest({"actions": [{"action": "read_tasks"}]}))
    assert not any(parsed.allows(gate) for gate in ACTION_GRANTS)


def test_no_integration_allows_nothing() -> None:
    parsed = Manifest.model_validate({"name": "Plain"})
    assert not any(parsed.allows(gate) for gate in ACTION_GRANTS)


def test_webhook_and_actions_together() -> None:
    parsed = Manifest.model_validate(
        manifest(
            {
                "triggers_on": "memory_creation",
                "webhook_url": "https://a.example/hook",
                "actions": [{"action": "create_facts"}],
            }
        )
    )
    assert parsed.allows("create_memories")
    assert parsed.external_integration is not None
    assert parsed.external_integration.webhook_url == "https://a.example/hook"


@pytest.mark.parametrize(
    ("integration", "caps", "named"),
    [
        ({"actions": [{"action": "delete_everything"}]}, None, "actions.0.action"),
        ({"actions": ["create_conversation"]}, None, "actions.0"),
        ({}, None, "needs triggers_on and webhook_url"),
        ({"triggers_on": "memory_creation"}, None, "webhook_url"),
        ({"webhook_url": "https://a.example/hook"}, None, "triggers_on"),
        (
            {"actions": [{"action": "create_conversation"}]},
            ["external_integration", "proactive_notification"],
            "needs a webhook",
        ),
    ],
)
def test_bad_integration_is_refused_naming_the_field(
    integration: dict[str, Any], caps: list[str] | None, named: str
) -> None:
    body = manifest(integration, caps)
    if caps and "proactive_notification" in caps:
        body["proactive_notification"] = {"scopes": ["user_name"]}
    assert named in refusal(body)
