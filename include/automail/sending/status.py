"""The one way any code changes a mail's status: update the row + write a MailEvent.

Sending, staff actions (management/actions.py) and campaign stops all go through here.
Core statements (no ORM unit of work) because the batch sender calls this once per
mail; the bulk form serves cap holds, lease recovery, releases and staff actions. The
PostgreSQL fast path of the batch sender (batch.PG_SENT_SQL) writes the same rows for
its common "sent" outcome in one statement; a test holds the two to the same events.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from automail.models import Mail, MailEvent

CHUNK = 1000


def change_status(
    session: Session,
    mail_id: int,
    from_status: str | None,
    to_status: str,
    event: str,
    actor: str = "system",
    detail: str | None = None,
    now: datetime | None = None,
    **values: object,
) -> None:
    """Set mail `mail_id` to `to_status` (plus column `values`) and record the event."""
    change_status_many(
        session, [(mail_id, from_status)], to_status, event, actor, detail, now, **values
    )


def change_status_many(
    session: Session,
    rows: Iterable[tuple[int, str | None]],
    to_status: str,
    event: str,
    actor: str = "system",
    detail: str | None = None,
    now: datetime | None = None,
    **values: object,
) -> int:
    """Bulk `change_status`: rows are (mail_id, from_status). No commit. Returns count."""
    rows = list(rows)
    now = now or datetime.now(UTC)
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        session.execute(
            update(Mail)
            .where(Mail.id.in_([mail_id for mail_id, _ in chunk]))
            .values(status=to_status, updated_at=now, **values)
        )
        record_events(session, chunk, to_status, event, actor, detail, now)
    return len(rows)


def record_events(
    session: Session,
    rows: list[tuple[int, str | None]],
    to_status: str | None,
    event: str,
    actor: str,
    detail: str | None,
    now: datetime,
) -> None:
    if rows:
        session.execute(
            insert(MailEvent),
            [
                {
                    "mail_id": mail_id,
                    "at": now,
                    "event": event,
                    "from_status": from_status,
                    "to_status": to_status,
                    "actor": actor,
                    "detail": detail,
                }
                for mail_id, from_status in rows
            ],
        )
