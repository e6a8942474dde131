"""cheaper writes to live conversations

Every segment updates its conversation row (the flush is scheduled, claimed and marked sent).
- SQLite: the FTS5 update trigger fired on any column and re-indexed title, overview and
  transcript each time; it now fires only when one of those three changes.
- Both: a partial index on ``flush_due_at`` (only rows waiting for a flush), so the dispatcher's
  claim does not scan every conversation ever stored.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 00:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REINDEX = (
    "INSERT INTO conversations_fts(conversations_fts, rowid, title, overview, transcript) "
    "VALUES ('delete', old.rowid, old.title, old.overview, old.transcript); "
    "INSERT INTO conversations_fts(rowid, title, overview, transcript) "
    "VALUES (new.rowid, new.title, new.overview, new.transcript); END"
)


def _update_trigger(columns: str) -> None:
    op.execute("DROP TRIGGER IF EXISTS conversations_fts_au")
    op.execute(
        f"CREATE TRIGGER conversations_fts_au AFTER UPDATE{columns} ON conversations "
        f"BEGIN {_REINDEX}"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _update_trigger(" OF title, overview, transcript")
    op.execute(
        "CREATE INDEX ix_conversations_flush_due ON conversations (flush_due_at) "
        "WHERE flush_due_at IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_conversations_flush_due")
    if op.get_bind().dialect.name == "sqlite":
        _update_trigger("")
