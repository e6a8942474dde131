"""Omi's integration API (contract.md §9): apps import conversations and memories for a user
and read them back, authenticated by their app secret and gated by the actions their manifest
lists. ``access`` answers who may call, ``limits`` counts requests as Omi does, ``memories`` and
``conversations`` do the work; ``nudge.api.integrations`` is the thin router."""
