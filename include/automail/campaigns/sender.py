"""The campaign DAG's send step: newsletter mails that are due, through the shared
claim/send/retry machinery (`automail.sending`).

Only released mails of campaigns in `sending` are claimed (due = the sender's own
`due_filter`: unsent and next_attempt_at reached, or an error whose retry is due), so
the allowed-hours and quota gates of lifecycle.py hold, transactional mail is left to
the `automail_send` DAG, and a claim (FOR UPDATE SKIP LOCKED / SQLite write lock) means
that DAG and this one never send the same mail twice (F3).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from automail import settings
from automail.campaigns.unsubscribe_spool import apply_pending as apply_spooled_unsubscribes
from automail.db import take_write_lock
from automail.models import Campaign, Mail
from automail.states import CAMPAIGN

ACTOR = "automail_campaigns"


def claim_due_campaign_mails(session: Session, claim_id: str, now: datetime) -> list[int]:
    from automail.sending.claim import due_filter

    cap = settings.get(session, "send_cap_per_run")
    lease = settings.get(session, "lease_seconds")
    sending = select(Campaign.id).where(Campaign.status == "sending")
    query = (
        select(Mail.id)
        .where(
            Mail.kind == CAMPAIGN,
            Mail.campaign_id.in_(sending),
            Mail.source_key.like("campaign:%"),
            Mail.due_at.is_not(None),  # released by the gate
            due_filter(now, settings.get(session, "max_retries")),
        )
        .order_by(Mail.id)
        .limit(cap)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    else:
        take_write_lock(session)
    ids = list(session.scalars(query))
    for start in range(0, len(ids), 1000):
        session.execute(
            update(Mail)
            .where(Mail.id.in_(ids[start : start + 1000]), Mail.claimed_by.is_(None))
            .values(claimed_by=claim_id, lease_until=now + timedelta(seconds=lease))
        )
    session.flush()
    return ids


def send_due_campaign_mails(
    session_factory: Callable[[], Session],
    smtp,  # noqa: ANN001 (automail.sending.SmtpConfig)
    run_id: str,
    now: datetime | None = None,
) -> dict:
    from automail.sending import send_batch

    now = now or datetime.now(UTC)
    claim_id = f"campaigns:{run_id}"[:100]
    with session_factory() as session:
        if settings.get(session, "mail_server_stopped"):
            return {"stopped": True, "claimed": 0}
        take_write_lock(session)
        apply_spooled_unsubscribes(session)  # before choosing whom to mail
        ids = claim_due_campaign_mails(session, claim_id, now)
        batch = settings.get(session, "send_batch_size")
        session.commit()
    keys = ("sent", "retry_scheduled", "failed", "refused", "in_doubt", "skipped")
    result = {"stopped": False, "claimed": len(ids), **dict.fromkeys(keys, 0)}
    for start in range(0, len(ids), batch):
        summary = send_batch(session_factory, ids[start : start + batch], claim_id, smtp, ACTOR)
        for key in keys:
            result[key] += int(getattr(summary, key, 0) or 0)
        result["stopped"] = result["stopped"] or bool(summary.stopped)
    return result
