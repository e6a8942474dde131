"""``/openapi.json`` documents every answer: each operation's success has a named schema."""

from __future__ import annotations

from typing import Any

import httpx


def _success_schemas(operation: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        media.get("schema") or {}
        for code, answer in operation["responses"].items()
        if code.startswith("2")
        for media in answer.get("content", {}).values()
    ]


def _named(schema: dict[str, Any]) -> bool:
    """A model (``$ref``), a list of one, or text (metrics, the event stream)."""
    if schema.get("type") == "array":
        return _named(schema.get("items") or {})
    return "$ref" in schema or schema.get("type") == "string"


async def test_every_operation_has_a_success_schema(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    components = document["components"]["schemas"]
    unnamed, empty_204 = [], []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            if "204" in operation["responses"]:  # No Content: there is no body to describe
                empty_204.append(not _success_schemas(operation))
                continue
            schemas = _success_schemas(operation)
            if not any(_named(s) for s in schemas):
                unnamed.append(where)
            for schema in schemas:
                ref = schema.get("$ref") or (schema.get("items") or {}).get("$ref")
                if ref:
                    assert ref.removeprefix("#/components/schemas/") in components, where
    assert not unnamed, f"operations without a success schema: {unnamed}"
    assert empty_204 and all(empty_204)


async def test_the_direct_route_documents_its_answer(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    answer = document["paths"]["/v2/integrations/{app_id}/notification"]["post"]["responses"]
    schema = answer["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/NotificationAccepted"}
    fields = document["components"]["schemas"]["NotificationAccepted"]["properties"]
    assert list(fields) == ["status", "notification_id", "devices", "duplicate"]
