"""the user in control: preferences, priority, expiry, scheduling, holds and inbox state

- ``users.preferences``: the user's own settings (time zone, quiet hours, daily cap); NULL: none.
- ``installs.preferences``: the user's settings for one installed app (muted, proactive, direct,
  channels, digest); NULL: the defaults, which change nothing.
- ``notifications.priority`` (low | normal | high), ``expires_at`` (from the sender's ``ttl``),
  ``send_at`` (a scheduled send), ``hold`` (why no push went out at once: '' none, ``muted``
  no push at all, ``quiet`` until the user's quiet hours end, ``digest`` until the app's digest
  window ends) with ``hold_reason`` (the words the status endpoint shows), and the inbox state
  ``seen_at`` and ``archived_at`` beside ``read_at``.
- ``ix_notifications_unread``: a user's unread, not archived notifications (the unread count,
  the APNs badge), without reading the rest.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 01:00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNREAD = "read_at IS NULL AND archived_at IS NULL"


def upgrade() -> None:
    op.add_column("users", sa.Column("preferences", sa.JSON(), nullable=True))
    op.add_column("installs", sa.Column("preferences", sa.JSON(), nullable=True))
    notification_columns: list[sa.Column[Any]] = [
        sa.Column("priority", sa.String(length=8), nullable=False, server_default="normal"),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("send_at", sa.Float(), nullable=True),
        sa.Column("hold", sa.String(length=20), nullable=False, server_default=""),
        sa.Column("hold_reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("seen_at", sa.Float(), nullable=True),
        sa.Column("archived_at", sa.Float(), nullable=True),
    ]
    for column in notification_columns:
        op.add_column("notifications", column)
    op.create_index(
        "ix_notifications_unread",
        "notifications",
        ["uid"],
        sqlite_where=sa.text(UNREAD),
        postgresql_where=sa.text(UNREAD),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_unread", table_name="notifications")
    for name in (
        "archived_at",
        "seen_at",
        "hold_reason",
        "hold",
        "send_at",
        "expires_at",
        "priority",
    ):
        op.drop_column("notifications", name)
    op.drop_column("installs", "preferences")
    op.drop_column("users", "preferences")
