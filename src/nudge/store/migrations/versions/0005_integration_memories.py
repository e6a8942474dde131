"""facts imported through the integration API, and its request counters

- ``user_facts.app_id``: the app that imported the fact (Omi's memory ``app_id``); NULL for facts
  added on the platform API, which Omi would call manually added.
- ``user_facts.tags``: the tags an app gave an explicit memory (Omi's ``tags``).
- ``rate_counters``: fixed-window request counts, Omi's limits on conversation and memory imports
  per app and user (used when Redis is not configured).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("user_facts", sa.Column("app_id", sa.String(length=64), nullable=True))
    op.add_column(
        "user_facts",
        sa.Column("tags", sa.JSON(), nullable=False, server_default=sa.text("'[]'")),
    )
    op.create_table(
        "rate_counters",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("window_end", sa.Float(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("rate_counters")
    op.drop_column("user_facts", "tags")
    op.drop_column("user_facts", "app_id")
