"""A relay's connection limit across every batch at once (`max_connections`, H2).

Airflow pools cannot differ per mapped task instance (a mapped operator's pool is fixed
at `partial`), so a pool per relay cannot bound one relay's batches among many. The
limit is kept in PostgreSQL instead: connection slot k of relay R is the session-level
advisory lock (hash(R), k), held by the batch's pinned store connection while its lanes
send. A killed worker's database connection closes and its slots free themselves; no
lease to wait out. SQLite (one machine, one writer) has no cross-process slots: each
batch takes what it asks for.
"""

from __future__ import annotations

import time
import zlib

from sqlalchemy import text
from sqlalchemy.orm import Session

POLL_SECONDS = 0.5


def _relay_key(conn_id: str) -> int:
    """A stable signed 32-bit key for the relay (advisory locks take two int4)."""
    return zlib.crc32(f"automail-relay:{conn_id}".encode()) - 2**31


def take_slots(session: Session, conn_id: str, wanted: int, limit: int, wait_seconds: float) -> int:
    """Take up to `wanted` of the relay's `limit` slots, waiting up to `wait_seconds`
    for at least one. Returns how many were taken (0: the relay is full)."""
    if session.get_bind().dialect.name != "postgresql":
        return min(wanted, limit)
    key = _relay_key(conn_id)
    deadline = time.monotonic() + wait_seconds
    while True:
        taken = 0
        for slot in range(limit):
            if taken == wanted:
                break
            got = session.execute(
                text("SELECT pg_try_advisory_lock(:k, :s)"), {"k": key, "s": slot}
            ).scalar_one()
            taken += bool(got)
        session.commit()  # locks are per connection, not per transaction
        if taken or time.monotonic() >= deadline:
            return taken
        time.sleep(POLL_SECONDS)


def release_slots(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_unlock_all()"))
        session.commit()


def slots_in_use(session: Session, conn_id: str) -> int:
    """How many of the relay's slots are held now (for the screen and tests)."""
    if session.get_bind().dialect.name != "postgresql":
        return 0
    return session.execute(
        text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = CAST(:k AS oid)"
        ),
        {"k": _relay_key(conn_id) & 0xFFFFFFFF},
    ).scalar_one()
