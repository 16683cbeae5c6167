"""Newsletters (SPEC C1–C10): scheduling, audience, status machine, hours, quota, unsubscribe."""

from automail.campaigns.audience import audience_csv, campaign_audience, validate_filter
from automail.campaigns.lifecycle import TickReport, compute_counts, source_key, tick
from automail.campaigns.quota import Quota, quota_status
from automail.campaigns.schedule import (
    CampaignRefused,
    cancel_campaign,
    create_campaign,
    get_campaign,
)

__all__ = [
    "CampaignRefused",
    "Quota",
    "TickReport",
    "audience_csv",
    "campaign_audience",
    "cancel_campaign",
    "compute_counts",
    "create_campaign",
    "get_campaign",
    "quota_status",
    "source_key",
    "tick",
    "validate_filter",
]
