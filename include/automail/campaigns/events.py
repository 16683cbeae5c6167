"""Recording campaign status transitions (C7): one row per change, plus the reason."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from automail.models import Campaign, CampaignEvent


def transition(
    session: Session,
    campaign: Campaign,
    to_status: str,
    reason: str,
    now: datetime,
    actor: str = "system",
) -> None:
    session.add(
        CampaignEvent(
            campaign_id=campaign.id,
            at=now,
            from_status=campaign.status,
            to_status=to_status,
            actor=actor,
            reason=reason,
        )
    )
    campaign.status = to_status
    campaign.status_reason = reason
    campaign.status_changed_at = now
    session.flush()
