"""Send history (A9): the newest mails that went to the SMTP server, per shop or for
all shops, each with its result (status and the last try's reply)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from automail import settings
from automail.models import Mail, SendAttempt, Shop


@dataclass(frozen=True)
class HistoryRow:
    mail_id: int
    shop: str
    kind: str
    to_address: str
    subject: str
    status: str
    attempted_at: datetime
    sent_at: datetime | None
    attempts: int
    outcome: str
    smtp_code: int | None
    enhanced_code: str | None
    message: str | None


def send_history(
    session: Session, shop: str | None = None, limit: int | None = None
) -> list[HistoryRow]:
    """Newest first by last try; `limit` defaults to the `history_limit` setting (1000)."""
    if limit is None:
        limit = int(settings.get(session, "history_limit"))
    if limit < 1:
        raise ValueError(f"limit: '{limit}' must be 1 or more")
    later = aliased(SendAttempt)
    # The last try of each mail: no later attempt exists (walks the (mail_id, id) index).
    last_try = (
        ~select(later.id)
        .where(later.mail_id == SendAttempt.mail_id, later.id > SendAttempt.id)
        .exists()
    )
    query = (
        select(Mail, SendAttempt, Shop.code)
        .join(SendAttempt, SendAttempt.mail_id == Mail.id)
        .join(Shop, Shop.id == Mail.shop_id)
        .where(last_try)
        .order_by(SendAttempt.id.desc())
        .limit(limit)
    )
    if shop is not None:
        shop_id = session.scalar(select(Shop.id).where(Shop.code == shop))
        if shop_id is None:
            raise LookupError(f"shop: {shop!r} is not a shop code")
        query = query.where(Mail.shop_id == shop_id)
    return [
        HistoryRow(
            mail_id=m.id,
            shop=code,
            kind=m.kind,
            to_address=m.to_address,
            subject=m.subject,
            status=m.status,
            attempted_at=a.finished_at or a.started_at,
            sent_at=m.sent_at,
            attempts=m.attempt_count,
            outcome=a.outcome,
            smtp_code=a.smtp_code,
            enhanced_code=a.enhanced_code,
            message=a.message,
        )
        for m, a, code in session.execute(query)
    ]
