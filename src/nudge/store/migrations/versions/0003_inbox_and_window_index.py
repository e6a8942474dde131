"""one index for the inbox and the hourly window

Accepting a notification wrote three indexes keyed by user or hash, each a random page per row:
``(uid, id)`` for the inbox, ``(app_id, uid, created_at)`` for the hourly window and
``(dedupe_hash, created_at)`` for the duplicate window. One index ``(uid, id, app_id, kind)`` now
serves the first two: the inbox is its prefix, and the hourly count is read from the index alone
(ids sort by time, see ``nudge.ids``), where the old one read every row of the window.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 01:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_notifications_user_recent", "notifications", ["uid", "id", "app_id", "kind"]
    )
    op.drop_index("ix_notifications_user", table_name="notifications")
    op.drop_index("ix_notifications_app_user_time", table_name="notifications")


def downgrade() -> None:
    op.create_index(
        "ix_notifications_app_user_time", "notifications", ["app_id", "uid", "created_at"]
    )
    op.create_index("ix_notifications_user", "notifications", ["uid", "id"])
    op.drop_index("ix_notifications_user_recent", table_name="notifications")
