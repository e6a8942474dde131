"""SQL of the proactive rate limit's claims (the ``rate_claims`` table)."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Connection, bindparam, case, delete

from nudge.store.fast import Statement
from nudge.store.models import RateClaim
from nudge.store.sql import dialect_insert


@lru_cache(maxsize=2)
def _claim_statement(dialect: str) -> Statement:
    """The claim as one upsert, built once per database (``ON CONFLICT`` is spelled per dialect)."""
    stmt = dialect_insert(dialect)(RateClaim).values(
        key=bindparam("key"), until=bindparam("until"), token=bindparam("token")
    )
    free = RateClaim.until <= bindparam("now")
    # Taken over only when expired; either way the row comes back: whose it is, until when.
    return Statement(
        stmt.on_conflict_do_update(
            index_elements=[RateClaim.key],
            set_={
                "until": case((free, stmt.excluded.until), else_=RateClaim.until),
                "token": case((free, stmt.excluded.token), else_=RateClaim.token),
            },
        ).returning(RateClaim.token, RateClaim.until)
    )


_RELEASE = Statement(
    delete(RateClaim).where(
        RateClaim.key == bindparam("key"), RateClaim.token == bindparam("token")
    )
)


def take(conn: Connection, key: str, token: str, now: float, until: float) -> tuple[str, float]:
    """Take the slot ``key`` until ``until`` if it is free (expired) at ``now``; its holder's token
    and until when it holds it (ours when the two tokens match)."""
    params = {"key": key, "until": until, "token": token, "now": now}
    ((holder, held_until),) = _claim_statement(conn.dialect.name).rows(conn, params)
    return holder, held_until


def give_back(conn: Connection, key: str, token: str) -> None:
    """Delete the claim if it is still ``token``'s."""
    _RELEASE.run(conn, {"key": key, "token": token})
