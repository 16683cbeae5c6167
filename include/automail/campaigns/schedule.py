"""Creating, checking and cancelling newsletters (C1, C3, C6)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from automail import settings
from automail.campaigns import audience
from automail.campaigns.content import CompiledContent
from automail.campaigns.events import transition
from automail.models import Campaign, CampaignCategory, CampaignEvent, Shop, Template

CANCELLABLE = ("scheduled",)


class CampaignRefused(ValueError):
    """An operation the campaign's state or the rules do not allow; the message says why."""


def _aware(at: datetime, field: str) -> datetime:
    if not isinstance(at, datetime):
        raise ValueError(f"{field}: {at!r} is not a date and time")
    if at.tzinfo is None:
        raise ValueError(f"{field}: {at.isoformat()} has no time zone (give e.g. +09:00)")
    return at.astimezone(UTC)


def check_schedule_time(session: Session, scheduled_at: datetime, now: datetime) -> datetime:
    """C1: no immediate sends; at least `campaign_min_lead_minutes` ahead."""
    scheduled_at = _aware(scheduled_at, "scheduled_at")
    lead = settings.get(session, "campaign_min_lead_minutes")
    earliest = now + timedelta(minutes=lead)
    if scheduled_at < earliest:
        raise CampaignRefused(
            f"scheduled_at: {scheduled_at.isoformat()} is less than {lead} minutes ahead "
            f"(campaign_min_lead_minutes={lead}; earliest allowed {earliest.isoformat()})"
        )
    return scheduled_at


def create_campaign(
    session: Session,
    *,
    shop_id: int,
    name: str,
    subject: str,
    body: str,
    body_format: str,
    scheduled_at: datetime,
    signature: str | None = None,
    category_id: int | None = None,
    template_id: int | None = None,
    audience_mode: str = "filter",
    audience_filter: dict | None = None,
    send_to: str = "all",
    checked_customer_ids: Iterable[int] | None = None,
    dedupe_newest: bool | None = None,
    skip_already_received: bool = False,
    now: datetime | None = None,
    actor: str = "system",
    track_opens: bool = False,
    track_clicks: bool = False,
    track_text_links: bool = False,
) -> Campaign:
    """Schedule a newsletter; a fixed audience is frozen here (C3)."""
    now = now or datetime.now(UTC)
    shop = session.get(Shop, shop_id)
    if shop is None:
        raise LookupError(f"shop_id: no shop {shop_id}")
    for field, value in (("name", name), ("subject", subject), ("body", body)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{field}: required, got {value!r}")
    if body_format not in ("text", "html"):
        raise ValueError(f"body_format: {body_format!r} is not 'text' or 'html' (required)")
    if audience_mode not in ("filter", "fixed"):
        raise ValueError(f"audience_mode: {audience_mode!r} is not 'filter' or 'fixed'")
    if send_to not in ("all", "checked"):
        raise ValueError(f"send_to: {send_to!r} is not 'all' or 'checked'")
    checked = list(checked_customer_ids) if checked_customer_ids is not None else None
    if send_to == "checked":
        if audience_mode != "fixed":
            raise ValueError(
                "send_to: 'checked' needs audience_mode 'fixed' (a re-run filter cannot keep "
                "a hand-picked selection; seed 002 送信ユーザ指定)"
            )
        if not checked:
            raise ValueError("checked_customer_ids: send_to 'checked' needs at least one customer")
    elif checked:
        raise ValueError("checked_customer_ids: only used with send_to 'checked'")
    if category_id is not None and session.get(CampaignCategory, category_id) is None:
        raise LookupError(f"category_id: no campaign category {category_id}")
    if template_id is not None:
        tpl = session.get(Template, template_id)
        if tpl is None or tpl.kind != "campaign":
            raise LookupError(f"template_id: no newsletter template {template_id}")
    flt = audience.validate_filter(audience_filter)
    CompiledContent(subject, body, body_format, signature)  # template errors now, not at 3 a.m.
    scheduled_at = check_schedule_time(session, scheduled_at, now)
    if dedupe_newest is None:
        dedupe_newest = bool(settings.get(session, "campaign_dedupe_newest"))

    campaign = Campaign(
        shop_id=shop_id,
        category_id=category_id,
        template_id=template_id,
        name=name.strip(),
        subject=subject,
        body=body,
        body_format=body_format,
        signature=signature,
        scheduled_at=scheduled_at,
        status="scheduled",
        audience_mode=audience_mode,
        audience_filter=flt,
        send_to=send_to,
        dedupe_newest=dedupe_newest,
        skip_already_received=skip_already_received,
        status_changed_at=now,
        track_opens=bool(track_opens),
        track_clicks=bool(track_clicks),
        track_text_links=bool(track_text_links),
    )
    session.add(campaign)
    session.flush()
    tz = settings.get(session, "campaign_timezone")
    if audience_mode == "fixed":
        ids = audience.matching_ids(shop_id, flt, tz)
        if dedupe_newest:
            ids = audience.dedupe_newest(ids)
        frozen = audience.freeze(session, campaign, ids, checked)
        reason = f"scheduled; fixed list of {frozen} customers frozen"
    else:
        reason = "scheduled; audience filter re-run just before sending"
    campaign.status_reason = reason
    session.add(
        CampaignEvent(
            campaign_id=campaign.id,
            at=now,
            from_status=None,
            to_status="scheduled",
            actor=actor,
            reason=reason,
        )
    )
    session.flush()
    return campaign


def cancel_campaign(
    session: Session, campaign_id: int, now: datetime | None = None, actor: str = "system"
) -> Campaign:
    """C6: cancel until `campaign_cancel_lock_minutes` before the scheduled time."""
    now = now or datetime.now(UTC)
    campaign = get_campaign(session, campaign_id, for_update=True)
    lock = settings.get(session, "campaign_cancel_lock_minutes")
    if campaign.status == "cancelled":
        return campaign
    if campaign.status not in CANCELLABLE:
        raise CampaignRefused(
            f"campaign {campaign_id}: cannot cancel a campaign whose status is "
            f"'{campaign.status}' (cancel is possible only while 'scheduled', until "
            f"{lock} minutes before the scheduled time)"
        )
    locked_at = campaign.scheduled_at - timedelta(minutes=lock)
    if now >= locked_at:
        raise CampaignRefused(
            f"campaign {campaign_id}: too late to cancel — locked as 'preparing' since "
            f"{locked_at.isoformat()} ({lock} minutes before {campaign.scheduled_at.isoformat()}; "
            f"setting campaign_cancel_lock_minutes={lock})"
        )
    transition(session, campaign, "cancelled", f"cancelled by {actor}", now, actor)
    return campaign


def get_campaign(session: Session, campaign_id: int, for_update: bool = False) -> Campaign:
    campaign = session.get(Campaign, campaign_id, with_for_update=for_update or None)
    if campaign is None:
        raise LookupError(f"campaign_id: no campaign {campaign_id}")
    return campaign
