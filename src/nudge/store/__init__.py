"""Storage: SQLAlchemy models, engine set-up and Alembic migrations."""

from nudge.store.db import Database

__all__ = ["Database"]
