"""held pushes wait in a state of their own, claimed a device's group at a time

- ``deliveries.state = 'held'``: a push held back for the user's quiet hours or an app's digest
  window, due when the window ends (``next_attempt_at``). The ordinary claim never takes it; the
  held claim takes every due held push of a device together, so that each device gets one summary
  push (with ``queued`` rows, two overlapping claims could split a device's group).
- ``ix_deliveries_held``: a device's held pushes, without reading anyone else's.
- Pushes already waiting for a window move to ``held`` (and back on downgrade).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HELD_ONLY = "state = 'held'"
WAITING_PUSHES = """
    provider <> 'inbox' AND device_id IS NOT NULL AND notification_id IN (
        SELECT id FROM notifications WHERE hold IN ('quiet', 'digest')
    )
"""


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_held",
        "deliveries",
        ["device_id"],
        sqlite_where=sa.text(HELD_ONLY),
        postgresql_where=sa.text(HELD_ONLY),
    )
    op.execute(f"UPDATE deliveries SET state = 'held' WHERE state = 'queued' AND {WAITING_PUSHES}")


def downgrade() -> None:
    op.execute(f"UPDATE deliveries SET state = 'queued' WHERE {HELD_ONLY}")
    op.drop_index("ix_deliveries_held", table_name="deliveries")
