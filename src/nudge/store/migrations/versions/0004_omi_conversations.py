"""conversations as Omi keeps them

A conversation had the client's session id as its primary key, so a session id could hold one
conversation ever. Omi's clients reuse one (the uid) for every conversation, so now:
- ``id`` is the conversation's own id; the client's id moves to ``session_id`` (existing rows keep
  their id, which becomes their session id too). At most one *live* conversation per
  ``(uid, session_id)``: a unique partial index, also the conflict target when one is opened.
- Omi's conversation fields: ``source`` (``omi`` for live, ``external_integration`` for imported),
  ``language``, ``geolocation``, ``external_data``, ``discarded``, ``app_id`` (the importing
  app), and the structured part beside ``title``/``overview``: ``emoji``, ``category``,
  ``action_items``, ``events``. ``summary_pending``: title and overview are plain fallbacks that
  the LLM may still replace when the conversation finishes.
- ``silence_due_at``: when a live conversation ends by itself if no segment arrives (claimed by
  the dispatcher like a flush); a partial index holds only the rows that have one.
- ``traces.conversation_id``: the conversation a webhook call was about.

Downgrading keeps every row; conversations stay addressable by their id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _columns() -> list[sa.Column[object]]:
    """Fresh each time: a Column joins the table it is added to."""
    return [
        sa.Column("session_id", sa.String(length=128), nullable=True),
        sa.Column("source", sa.String(length=40), nullable=False, server_default="omi"),
        sa.Column("language", sa.String(length=20), nullable=True),
        sa.Column("geolocation", sa.JSON(), nullable=True),
        sa.Column("external_data", sa.JSON(), nullable=True),
        sa.Column("discarded", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("app_id", sa.String(length=64), nullable=True),
        sa.Column("emoji", sa.String(length=32), nullable=False, server_default="🧠"),
        sa.Column("category", sa.String(length=40), nullable=False, server_default="other"),
        sa.Column("action_items", sa.JSON(), nullable=False, server_default=sa.text("'[]'")),
        sa.Column("events", sa.JSON(), nullable=False, server_default=sa.text("'[]'")),
        sa.Column("summary_pending", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("silence_due_at", sa.Float(), nullable=True),
    ]


def upgrade() -> None:
    for column in _columns():
        op.add_column("conversations", column)
    op.execute("UPDATE conversations SET session_id = id")
    op.execute(
        "CREATE UNIQUE INDEX uq_conversations_live_session ON conversations (uid, session_id) "
        "WHERE status = 'live'"
    )
    op.execute(
        "CREATE INDEX ix_conversations_silence_due ON conversations (silence_due_at) "
        "WHERE silence_due_at IS NOT NULL"
    )
    op.add_column("traces", sa.Column("conversation_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    op.drop_column("traces", "conversation_id")
    op.execute("DROP INDEX ix_conversations_silence_due")
    op.execute("DROP INDEX uq_conversations_live_session")
    for column in reversed(_columns()):
        op.drop_column("conversations", column.name)
