"""hourly windows as per-minute counters

The hourly limits (direct notifications, webhooks' {"message"} answers) were counted over the
notifications of the last hour on every acceptance batch, a cost that grew with the user's sends
(one user at a limit of 1,000,000 fell to 275 accepted/s). ``window_buckets`` holds one row per
(user, app, kind, minute) with how many were accepted in that minute; a window reads at most 61
of them. The upgrade fills them from the last 61 minutes of notifications, so no one's window
starts again at the upgrade.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 22:00:00
"""

import time
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUCKET_S = 60
BUCKETS = 61  # the minutes a window reads: the current one and the 60 before it


def upgrade() -> None:
    op.create_table(
        "window_buckets",
        sa.Column("uid", sa.String(length=128), nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("minute", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("uid", "app_id", "kind", "minute"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_window_buckets_minute", "window_buckets", ["minute"])
    bind = op.get_bind()
    # created_at is positive: SQLite's CAST truncates, which is the floor; PostgreSQL's rounds.
    if bind.dialect.name == "postgresql":
        minute = f"CAST(floor(created_at / {BUCKET_S}) AS INTEGER)"
    else:
        minute = f"CAST(created_at / {BUCKET_S} AS INTEGER)"
    first = int(time.time() // BUCKET_S) - (BUCKETS - 1)
    # Ids sort by time (nudge.ids): the last hour is a range on the primary key. The floor is
    # written out here so that this migration keeps meaning what it meant.
    id_floor = f"n_{first * BUCKET_S * 1000:012x}"
    bind.execute(
        sa.text(
            "INSERT INTO window_buckets (uid, app_id, kind, minute, count) "
            f"SELECT uid, app_id, kind, {minute}, count(*) FROM notifications "
            "WHERE id >= :id_floor AND kind IN ('direct', 'message') AND app_id IS NOT NULL "
            f"AND created_at >= :since GROUP BY uid, app_id, kind, {minute}"
        ),
        {"id_floor": id_floor, "since": float(first * BUCKET_S)},
    )


def downgrade() -> None:
    op.drop_index("ix_window_buckets_minute", table_name="window_buckets")
    op.drop_table("window_buckets")
