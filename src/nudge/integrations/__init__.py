"""Omi's integration API (contract.md §9): apps import and read a user's conversations and
memories, gated by the actions their manifest lists; ``nudge.api.integrations`` is the router."""
