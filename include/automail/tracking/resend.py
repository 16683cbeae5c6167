"""Resend to non-openers in one step: a new campaign, same content and tracking, whose
audience is frozen now as the customers who were delivered campaign X and did not open
it (people's opens and clicks only; a machine's prefetch does not count as opened)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from automail import settings
from automail.campaigns.schedule import CampaignRefused, create_campaign, get_campaign
from automail.models import Campaign

DONE = ("sent", "counting", "counted", "stopped")


def non_opener_filter(campaign_id: int) -> dict:
    return {"received_campaign": campaign_id, "not_opened_campaign": campaign_id}


def resend_to_non_openers(
    session: Session,
    campaign_id: int,
    *,
    scheduled_at: datetime | None = None,
    subject: str | None = None,
    now: datetime | None = None,
    actor: str = "system",
) -> Campaign:
    now = now or datetime.now(UTC)
    original = get_campaign(session, campaign_id)
    if original.status not in DONE:
        raise CampaignRefused(
            f"campaign {campaign_id}: status is '{original.status}'; resend to non-openers "
            f"needs a campaign that was sent ({', '.join(DONE)})"
        )
    if not original.track_opens:
        raise CampaignRefused(
            f"campaign {campaign_id}: open tracking was off, so non-openers are unknown"
        )
    if scheduled_at is None:
        lead = settings.get(session, "campaign_min_lead_minutes")
        scheduled_at = now + timedelta(minutes=lead + 1)
    return create_campaign(
        session,
        shop_id=original.shop_id,
        name=f"{original.name} (resend to non-openers of {original.id})"[:200],
        subject=subject or original.subject,
        body=original.body,
        body_format=original.body_format,
        signature=original.signature,
        category_id=original.category_id,
        template_id=original.template_id,
        scheduled_at=scheduled_at,
        audience_mode="fixed",
        audience_filter=non_opener_filter(original.id),
        dedupe_newest=original.dedupe_newest,
        now=now,
        actor=actor,
        track_opens=original.track_opens,
        track_clicks=original.track_clicks,
        track_text_links=original.track_text_links,
    )
