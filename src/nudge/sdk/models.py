"""The API's wire shapes (pydantic): the server answers with them, the SDK reads them."""

from __future__ import annotations

SCOPES = ("user_name", "user_facts", "user_context", "user_chat")
