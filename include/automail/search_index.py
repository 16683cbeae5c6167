"""Background text indexing for the mail search screen (B2), off the creation path.

Mails are inserted with `search_indexed = false`, so an insert skips the trigram GIN
indexes (they are partial, `WHERE search_indexed`: see migration 0003). This step flips
new mails to true in batches, which is when they enter those indexes. The search stays
exact either way: it reads indexed mails through the trigram indexes and the pending
remainder through the partial btree `ix_mails_search_pending`, so this only decides how
fast a search is, never what it finds. Run by the DAG `automail_maintenance` and by
`automail search-index`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from automail.db import rowcount
from automail.models import Mail

DEFAULT_BATCH = 5_000


@dataclass(frozen=True)
class IndexReport:
    indexed: int  # mails flipped to search_indexed in this call
    pending: int  # mails still waiting after it

    def as_dict(self) -> dict[str, int]:
        return {"indexed": self.indexed, "pending": self.pending}


def pending_count(session: Session) -> int:
    """Mails not yet in the trigram indexes (served by the partial pending index)."""
    return session.scalar(select(func.count()).where(Mail.search_indexed.is_(False))) or 0


def _flip_batch(session: Session, size: int) -> int:
    """Flip up to `size` pending mails, oldest first. On PostgreSQL rows another
    transaction holds (a send in progress) are skipped, not waited for: the next run
    takes them."""
    if session.get_bind().dialect.name == "postgresql":
        sql = (
            "UPDATE mails SET search_indexed = true WHERE id IN ("
            " SELECT id FROM mails WHERE NOT search_indexed ORDER BY id LIMIT :n"
            " FOR UPDATE SKIP LOCKED)"
        )
    else:
        sql = (
            "UPDATE mails SET search_indexed = 1 WHERE id IN ("
            " SELECT id FROM mails WHERE NOT search_indexed ORDER BY id LIMIT :n)"
        )
    return rowcount(session.execute(text(sql), {"n": size}))


def index_pending(session: Session, limit: int | None = None, batch: int = DEFAULT_BATCH) -> int:
    """Flip up to `limit` pending mails (all of them if None) to search_indexed, one
    committed batch of `batch` rows at a time so locks and WAL stay small. Returns how
    many were flipped."""
    if batch < 1:
        raise ValueError(f"batch: {batch!r} must be 1 or more")
    if limit is not None and limit < 0:
        raise ValueError(f"limit: {limit!r} must be 0 or more")
    done = 0
    while limit is None or done < limit:
        size = batch if limit is None else min(batch, limit - done)
        flipped = _flip_batch(session, size)
        session.commit()
        done += flipped
        if flipped < size:
            break
    return done


def run(session: Session, limit: int | None = None, batch: int = DEFAULT_BATCH) -> IndexReport:
    """index_pending, then how many are left (the DAG's and the CLI's summary)."""
    indexed = index_pending(session, limit, batch)
    return IndexReport(indexed=indexed, pending=pending_count(session))
